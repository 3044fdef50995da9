#!/usr/bin/env bash
# Question: do reloads disturb traffic? Runs wrk (1 thread, 50 keep-alive
# connections, 10 s) against a release weir in front of two nginx upstreams,
# once with no reloads and once while the config's weight is rewritten every
# 350 ms (past the 250 ms debounce: ~28 applied reloads), interleaved for ROUNDS rounds, and prints
# req/s, p50, p99 and non-2xx/socket errors for each. Loopback only.
# Needs: nginx, wrk, a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2}
BIN=${WEIR_BIN:-$PWD/target/release/weir}
. benches/lib.sh
start_upstreams
wp=$(free_port); ap=$(free_port)
cfg() {
  cat > "$work/weir.yaml.tmp" <<CFG
listen: [{address: 127.0.0.1:$wp}]
admin: {address: 127.0.0.1:$ap}
access_log: false
upstreams: {v1: {endpoints: [127.0.0.1:$sp]}, v2: {endpoints: [127.0.0.1:$cp]}}
routes:
  - {name: app, stable: {upstream: v1}, canary: {upstream: v2}, weight: $1}
CFG
  mv "$work/weir.yaml.tmp" "$work/weir.yaml"
}
cfg 10
TOKIO_WORKER_THREADS=1 taskset -c 0 "$BIN" run -c "$work/weir.yaml" 2>"$work/weir.log" & pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ap/ready" >/dev/null && break; sleep 0.1; done
run() {
  taskset -c 1 timeout 30 wrk -t1 -c50 -d10s --latency "http://127.0.0.1:$wp/" > "$work/wrk.out"
  rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")
  p50=$(awk '$1=="50%" {print $2}' "$work/wrk.out"); p99=$(awk '$1=="99%" {print $2}' "$work/wrk.out")
  errs=$(grep -E "Non-2xx|Socket errors" "$work/wrk.out" | tr '\n' ' ' || true)
  printf '%-12s req/s %-10s p50 %-8s p99 %-8s %s\n' "$1" "$rps" "$p50" "$p99" "${errs:-errors none}"
}
for r in $(seq "$ROUNDS"); do
  run "no-reload"
  before=$(grep -c "config reloaded" "$work/weir.log" || true)
  ( for i in $(seq 28); do cfg $(( (i % 2) * 20 + 5 )); sleep 0.35; done ) & writer=$!
  run "reloading"
  wait "$writer"
  after=$(grep -c "config reloaded" "$work/weir.log" || true)
  echo "  round $r: $((after - before)) reloads applied during the loaded run"
done
