#!/usr/bin/env bash
# Runs a real container through containerd 1.6 and tshim on a fresh Debian/Ubuntu machine (root).
# It installs what it needs, builds the shim, starts a private containerd in a temp dir (its own
# --root/--state/--address, so a system containerd is left alone), runs busybox through
# io.containerd.tshim.v2 and removes everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

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
  apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
[ -d node_modules ] && [ -f dist/main.js ] || npm ci --no-audit --no-fund

tmp=$(mktemp -d /tmp/tshim-demo.XXXXXX)
cpid=""
cleanup() {
  ctr --address "$tmp/c.sock" task kill -s SIGKILL demo >/dev/null 2>&1 || true
  ctr --address "$tmp/c.sock" task rm demo >/dev/null 2>&1 || true
  ctr --address "$tmp/c.sock" container rm demo >/dev/null 2>&1 || true
  [ -n "$cpid" ] && kill "$cpid" 2>/dev/null && wait "$cpid" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT

mkdir -p "$tmp/rootfs/bin" "$tmp/rootfs/proc" "$tmp/rootfs/sys" "$tmp/rootfs/dev" "$tmp/rootfs/tmp"
cp /bin/busybox "$tmp/rootfs/bin/busybox"
for applet in sh echo cat uname id ps; do ln -s busybox "$tmp/rootfs/bin/$applet"; done
cat >"$tmp/config.toml" <<TOML
version = 2
root = "$tmp/root"
state = "$tmp/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$tmp/c.sock"
TOML
PATH="$repo/bin:$PATH" containerd --config "$tmp/config.toml" >"$tmp/containerd.log" 2>&1 &
cpid=$!
for _ in $(seq 50); do ctr --address "$tmp/c.sock" version >/dev/null 2>&1 && break; sleep 0.1; done

echo "+ ctr run --runtime io.containerd.tshim.v2 --rootfs <busybox> demo sh -c '...'"
ctr --address "$tmp/c.sock" run --rm --runtime io.containerd.tshim.v2 --rootfs "$tmp/rootfs" demo \
  /bin/sh -c 'echo "Hello from a container run by tshim"; echo "kernel: $(uname -r), pid in container: $$"'
echo "shim: $("$repo/bin/containerd-shim-tshim-v2" -v | head -2 | tail -1 | xargs)"
