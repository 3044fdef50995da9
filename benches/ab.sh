#!/usr/bin/env bash
# A/B two weir binaries on the same work: wrk -t1 -c50 -d10s against each in
# turn (interleaved for ROUNDS rounds), weir on core 0 with one worker, nginx
# upstreams and wrk on core 1, 90/10 split, access log off. Loopback only.
#   benches/ab.sh OLD_BIN NEW_BIN [MORE_BINS...]   (each round runs them in turn)
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: benches/ab.sh BIN BIN [BIN...]"; exit 1; }
ROUNDS=${ROUNDS:-3}
. "$(dirname "$0")/lib.sh"
start_upstreams
wp=$(free_port); ap=$(free_port)
cat > "$work/weir.yaml" <<CFG
listen: [{address: 127.0.0.1:$wp}]
admin: {address: 127.0.0.1:$ap}
access_log: false
upstreams: {v1: {endpoints: [127.0.0.1:$sp]}, v2: {endpoints: [127.0.0.1:$cp]}}
routes:
  - {name: app, stable: {upstream: v1}, canary: {upstream: v2}, weight: 10}
CFG
for r in $(seq "$ROUNDS"); do
  for bin in "$@"; do
    TOKIO_WORKER_THREADS=1 taskset -c 0 "$bin" run -c "$work/weir.yaml" 2>/dev/null & pid=$!
    for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ap/ready" >/dev/null && break; sleep 0.1; done
    taskset -c 1 timeout 30 wrk -t1 -c50 -d2s "http://127.0.0.1:$wp/" >/dev/null
    taskset -c 1 timeout 30 wrk -t1 -c50 -d10s --latency "http://127.0.0.1:$wp/" > "$work/wrk.out"
    kill "$pid"; wait "$pid" 2>/dev/null || true
    printf 'round %s %-40s req/s %-10s p99 %s\n' "$r" "$bin" "$(awk '/Requests\/sec/ {print $2}' "$work/wrk.out")" "$(awk '$1=="99%" {print $2}' "$work/wrk.out")"
  done
done
