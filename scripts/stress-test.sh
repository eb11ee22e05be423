#!/usr/bin/env bash
# Runs the whole suite several times back to back while every core is kept busy, the way a loaded CI
# machine is: a flaky test shows up here before it blocks a landing.
#   npm run test:stress [-- RUNS [vitest args...]]      (default 5 runs; TSHIM_STRESS_HOGS=N hogs)
# Stops at the first failing run and keeps its log. Only the hog processes this script started are killed.
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-5}
shift || true
hogs=${TSHIM_STRESS_HOGS:-$(nproc)}
logdir=$(mktemp -d /tmp/tshim-stress.XXXXXX)
hog_pids=()

stop_hogs() {
  for pid in "${hog_pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${hog_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  hog_pids=()
}
trap stop_hogs EXIT

npm run build --silent
npm run typecheck --silent

for _ in $(seq "$hogs"); do
  node -e 'for (;;) {}' &
  hog_pids+=("$!")
done
echo "stress: $hogs CPU hog(s) started (pids ${hog_pids[*]}); $runs run(s); logs in $logdir"

for i in $(seq "$runs"); do
  log="$logdir/run-$i.log"
  start=$(date +%s)
  if npx vitest run "$@" >"$log" 2>&1; then
    echo "stress: run $i/$runs passed in $(( $(date +%s) - start ))s: $(sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^ +Tests ' | tr -s ' ')"
  else
    echo "stress: run $i/$runs FAILED after $(( $(date +%s) - start ))s; failures:"
    sed 's/\x1b\[[0-9;]*m//g' "$log" | grep -E '^ *(FAIL|×)|AssertionError|Error:' | head -40
    echo "stress: full log: $log"
    exit 1
  fi
done
echo "stress: all $runs runs passed under load"
rm -rf "$logdir"
