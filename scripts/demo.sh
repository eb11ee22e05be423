#!/usr/bin/env bash
# A tour of tshim on a fresh Debian/Ubuntu machine (root): a container, an exec, live stats and the
# events stream, through containerd 1.6 and io.containerd.tshim.v2, then everything removed.
#
# It installs what it needs (containerd, runc, busybox-static from apt; npm ci when the checkout is
# not built), starts a private containerd in a temp dir (its own --root/--state/--address, so a
# system containerd is left alone) and removes everything it started.
#
#   TSHIM_DEMO_NO_INSTALL=1   fail instead of installing anything (the test runs it this way)
#   TSHIM_DEMO_SHIM_DIR=DIR   the directory holding containerd-shim-tshim-v2 (default: bin/;
#                             out/linux-x64 runs the single executable of `npm run package`)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
shim_dir=${TSHIM_DEMO_SHIM_DIR:-$repo/bin}

export DEBIAN_FRONTEND=noninteractive
pkgs=(containerd runc busybox-static)
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "tshim needs Node.js 20 or newer on PATH (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ -n "${TSHIM_DEMO_NO_INSTALL:-}" ]; then echo "demo: missing packages: ${missing[*]}" >&2; exit 1; fi
  apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if ! { [ -d node_modules ] && [ -f dist/main.js ]; }; then
  if [ -n "${TSHIM_DEMO_NO_INSTALL:-}" ]; then echo "demo: the checkout is not built (npm ci)" >&2; exit 1; fi
  npm ci --no-audit --no-fund
fi

tmp=$(mktemp -d /tmp/tshim-demo.XXXXXX)
ns=demo
cpid=""
epid=""
c() { ctr --address "$tmp/c.sock" --namespace "$ns" "$@"; }
cleanup() {
  c task kill -s SIGKILL demo >/dev/null 2>&1 || true
  c task rm -f demo >/dev/null 2>&1 || true
  c container rm demo >/dev/null 2>&1 || true
  if [ -n "$epid" ]; then kill "$epid" 2>/dev/null || true; wait "$epid" 2>/dev/null || true; fi
  if [ -n "$cpid" ]; then kill "$cpid" 2>/dev/null || true; wait "$cpid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/proc" "$tmp/rootfs/sys" "$tmp/rootfs/dev" "$tmp/rootfs/tmp"
cp /bin/busybox "$tmp/rootfs/bin/busybox"
for applet in sh echo cat uname id ps sleep hostname head; do ln -s busybox "$tmp/rootfs/bin/$applet"; done
cat >"$tmp/config.toml" <<TOML
version = 2
root = "$tmp/root"
state = "$tmp/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$tmp/c.sock"
TOML
# TSHIM_SPARE=0: no spare daemon, so nothing outlives the demo (README, Performance).
PATH="$shim_dir:$PATH" TSHIM_SPARE=0 containerd --config "$tmp/config.toml" >"$tmp/containerd.log" 2>&1 &
cpid=$!
for _ in $(seq 100); do ctr --address "$tmp/c.sock" version >/dev/null 2>&1 && break; sleep 0.1; done
echo "shim: $shim_dir/containerd-shim-tshim-v2, $("$shim_dir/containerd-shim-tshim-v2" -v | sed -n "2,\$p" | xargs)"

step "events: ctr events, in the background"
ctr --address "$tmp/c.sock" events >"$tmp/events.txt" 2>&1 &
epid=$!
for _ in $(seq 100); do
  c namespaces label "$ns" demo.sync="$_" >/dev/null 2>&1 || c namespaces create "$ns" >/dev/null 2>&1 || true
  grep -q '/namespaces/' "$tmp/events.txt" 2>/dev/null && break
  sleep 0.1
done

step "a container: ctr run -d --runtime io.containerd.tshim.v2 --rootfs <busybox> demo"
c run -d --runtime io.containerd.tshim.v2 --log-uri "file://$tmp/demo.log" --rootfs "$tmp/rootfs" demo \
  /bin/sh -c 'echo "Hello from a container run by tshim (kernel $(uname -r))"; i=0; while true; i=$((i+1)); do echo "tick $i"; sleep 1; done'
c task ls
for _ in $(seq 50); do [ -s "$tmp/demo.log" ] && break; sleep 0.1; done
echo "its output (file:// log):"; sed 's/^/  /' "$tmp/demo.log"

step "an exec: ctr task exec --exec-id hello demo ..."
c task exec --exec-id hello demo /bin/sh -c 'echo "exec in $(hostname): pid $$, id: $(id -u)"; ps'

step "live stats: ctr task metrics demo (3 samples)"
for i in 1 2 3; do
  echo "-- sample $i"
  c task metrics demo | grep -Ei '^(METRIC|memory\.usage_in_bytes|memory\.usage|pids\.current|cpu)' || c task metrics demo
  [ "$i" -lt 3 ] && sleep 1
done

step "stop it: ctr task kill demo, then remove it"
c task kill -s SIGKILL demo
for _ in $(seq 100); do c task ls | grep -q 'demo.*STOPPED' && break; sleep 0.1; done
c task rm demo
c container rm demo

step "the events stream (what tshim published, through containerd)"
for _ in $(seq 50); do grep -q '/tasks/delete' "$tmp/events.txt" && break; sleep 0.1; done
grep -E " $ns /(tasks|containers)/" "$tmp/events.txt" | sed -E 's/^[^ ]+ [^ ]+ [^ ]+ [^ ]+ //; s/^/  /' | cut -c1-160
echo
echo "demo: done; removing the private containerd and $tmp"
