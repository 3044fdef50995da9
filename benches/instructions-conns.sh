#!/usr/bin/env bash
# Question: once CONNS keep-alive connections are all open and busy, how many
# user-space instructions, and how many simulated first-level (D1) and
# last-level (LL) data-cache misses, does weir spend per proxied request?
# Comparing CONNS=50 with CONNS=5000 shows what of the growth in cost per
# request with many connections (benches/scale.sh) is weir's own work.
#
# benches/instructions.sh zeroes its counters before a second wrk run, which
# opens its connections anew: with thousands of connections that measures
# connection setup. Here one wrk run does both: WARM seconds to open every
# connection and settle, then the counters are zeroed, MEAS seconds counted,
# dumped; requests are read from weir's own weir_requests_total around that
# window. weir runs under `valgrind --tool=callgrind --cache-sim=yes` on core
# 0 (one worker), the upstream nginx and wrk on core 1. CG_OUT=file keeps
# the dump for callgrind_annotate. Loopback only; bounded by the timeouts.
#
#   CONNS=50 WARM=8 MEAS=10 benches/instructions-conns.sh
#   CONNS=5000 WARM=30 MEAS=30 benches/instructions-conns.sh
#   WEIR_BIN=/path/to/weir ...       # another weir binary, no build
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-50}; WARM=${WARM:-8}; MEAS=${MEAS:-10}
for t in wrk nginx curl valgrind callgrind_control; do command -v $t >/dev/null || { echo "needs $t"; exit 1; }; done
[ -n "${WEIR_BIN:-}" ] || cargo build --release --quiet
. benches/lib.sh
start_upstreams
pp=$(free_port); ap=$(free_port); hp=$(free_port)
write_proxies 1
served() { curl -sf "http://127.0.0.1:$ap/metrics" | awk '/^weir_requests_total/ {s += $2} END {printf "%d\n", s}'; }
TOKIO_WORKER_THREADS=1 taskset -c 0 valgrind --tool=callgrind --cache-sim=yes \
  --callgrind-out-file="$work/cg.%p" "${WEIR_BIN:-./target/release/weir}" run -c "$work/weir.yaml" 2>/dev/null &
ppid=$!
for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$pp/" && break; sleep 0.1; done
# A long request timeout: under valgrind weir is slow, and wrk would
# otherwise reconnect every connection whose answer took over 2 s.
taskset -c 1 timeout $((WARM + MEAS + 60)) wrk -t1 -c"$CONNS" -d$((WARM + MEAS))s --timeout 60s \
  "http://127.0.0.1:$pp/" > "$work/wrk.out" &
wrk_pid=$!
sleep "$WARM"
r0=$(served); timeout 60 callgrind_control -z "$ppid" >/dev/null
sleep "$MEAS"
timeout 60 callgrind_control -d "$ppid" >/dev/null; r1=$(served)
wait "$wrk_pid" || true
dump=$(ls -t "$work"/cg."$ppid".* | head -1)
[ -n "${CG_OUT:-}" ] && cp "$dump" "$CG_OUT"
echo "| connections | requests counted | instructions / request | D1 misses / request | LL misses / request |"
echo "|---|---|---|---|---|"
awk -v n=$((r1 - r0)) -v c="$CONNS" '/^events:/ {for (i = 2; i <= NF; i++) e[i] = $i}
  /^summary:|^totals:/ {for (i = 2; i <= NF; i++) v[e[i]] = $i
    printf "| %d | %d | %.0f | %.1f | %.1f |\n", c, n, v["Ir"] / n, (v["D1mr"] + v["D1mw"]) / n, (v["DLmr"] + v["DLmw"]) / n; exit}' "$dump"
grep -E 'Socket errors' "$work/wrk.out" || true
