#!/usr/bin/env bash
# Question: what does the allocator cost or give? Two weir builds side by
# side (default: jemalloc with its background purge thread, and
# --no-default-features: the system's glibc malloc), one worker on core 0,
# nginx upstreams and wrk on core 1, 50 keep-alive connections, ROUNDS
# interleaved rounds of SECS seconds. Prints req/s, CPU µs per request and
# RSS idle / after the run per round. Loopback only.
#
#   benches/allocator.sh            # builds both (release) if needed
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-10}; ROUNDS=${ROUNDS:-3}
for t in wrk curl python3 nginx; do command -v $t >/dev/null || { echo "needs $t"; exit 1; }; done
JEMALLOC_BIN=${JEMALLOC_BIN:-target/release/weir}
GLIBC_BIN=${GLIBC_BIN:-target/sysalloc/release/weir}
[ -x "$JEMALLOC_BIN" ] || cargo build --release --quiet
[ -x "$GLIBC_BIN" ] || cargo build --release --quiet --no-default-features --target-dir target/sysalloc
. benches/lib.sh
start_upstreams
pp=$(free_port); ap=$(free_port)
cat >"$work/weir.yaml" <<CFG
listen: [{address: "127.0.0.1:$pp"}]
admin: {address: "127.0.0.1:$ap"}
access_log: false
state_dir: $work/state
upstreams: {stable: {endpoints: ["127.0.0.1:$sp"]}, canary: {endpoints: ["127.0.0.1:$cp"]}}
routes:
  - {name: app, stable: {upstream: stable}, canary: {upstream: canary}, weight: 10}
CFG
ticks() { awk '{print $14 + $15}' /proc/"$1"/stat; }
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' /proc/"$1"/status; }
hz=$(getconf CLK_TCK)
printf "%-8s %5s %10s %12s %9s %9s\n" build round "req/s" "CPU µs/req" "RSS idle" "RSS after"
for r in $(seq "$ROUNDS"); do
  for pair in "jemalloc:$JEMALLOC_BIN" "glibc:$GLIBC_BIN"; do
    name=${pair%%:*}; bin=${pair#*:}
    rm -rf "$work/state"
    TOKIO_WORKER_THREADS=1 taskset -c 0 "$bin" run -c "$work/weir.yaml" 2>/dev/null &
    wpid=$!
    for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$pp/" && break; sleep 0.1; done
    idle=$(rss $wpid)
    taskset -c 1 wrk -t1 -c50 -d2s "http://127.0.0.1:$pp/" >/dev/null
    t0=$(ticks $wpid)
    out=$(taskset -c 1 wrk -t1 -c50 -d"${SECS}s" "http://127.0.0.1:$pp/")
    t1=$(ticks $wpid)
    reqs=$(echo "$out" | awk '/requests in/ {print $1}')
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    cpu=$(python3 -c "print(f'{($t1-$t0)/$hz/$reqs*1e6:.2f}')")
    printf "%-8s %5s %10s %12s %9s %9s\n" "$name" "$r" "$rps" "$cpu" "$idle" "$(rss $wpid)"
    kill $wpid; wait $wpid 2>/dev/null || true
  done
done
