#!/usr/bin/env bash
# Question: per proxied request, how many user-space instructions does each
# proxy execute? (Unlike timings on this shared VM, instruction counts repeat
# to within about 1 % from run to run, so small changes can be seen.)
#
# Per proxy (the benches/lib.sh configs: a 90/10 split over keep-alive
# upstreams, one worker): run it under `valgrind --tool=callgrind` on core 0,
# warm up, zero the counters, run `wrk -t1 -c$CONNS -d${SECS}s` (core 1),
# dump, and divide the instructions by the requests wrk completed. Valgrind
# counts user space only: the kernel's share (most of a request's time, see
# docs/performance.md) is not in these figures. With TOP=1 also prints the
# most expensive functions of weir, inclusive; CG_OUT=file keeps weir's
# callgrind dump for callgrind_annotate. CACHE=1 adds valgrind's cache
# simulation (`--cache-sim=yes`: first-level and last-level data misses per
# request, the simulated caches sized like this machine's), to see how much
# of a proxy's user-space data traffic misses at CONNS=50 against thousands.
#
# Two floors, proxying nothing: "origin" is nginx answering 200 itself;
# "hyper" is weir's admin listener answering GET /live (hyper's HTTP/1.1
# server on the same tokio runtime, a handler that builds a fixed reply):
# what any proxy built on hyper's server pays before it forwards anything.
# Loopback only; each run bounded by -d and timeout.
#
#   benches/instructions.sh               # SECS=8 CONNS=10
#   WEIR_BIN=/path/to/weir benches/instructions.sh   # another weir binary, no build
#   CACHE=1 CONNS=5000 NAMES="nginx weir" benches/instructions.sh   # cache misses, many connections
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-8}; CONNS=${CONNS:-10}; NAMES=${NAMES:-origin nginx haproxy weir hyper}
for t in wrk nginx haproxy valgrind callgrind_control python3; do
  command -v $t >/dev/null || { echo "needs $t"; exit 1; }
done
[ -n "${WEIR_BIN:-}" ] || cargo build --release --quiet
. benches/lib.sh
start_upstreams
pp=$(free_port); ap=$(free_port); hp=$(free_port)
write_proxies 1
vg=(valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p")
[ -n "${CACHE:-}" ] && vg+=(--cache-sim=yes)
up() { curl -sf -o /dev/null "$url"; }
for name in $NAMES; do
  rm -f "$work"/cg.*
  url="http://127.0.0.1:$pp/"
  case $name in
    hyper) url="http://127.0.0.1:$ap/live"; TOKIO_WORKER_THREADS=1 taskset -c 0 "${vg[@]}" \
      "${WEIR_BIN:-./target/release/weir}" run -c "$work/weir.yaml" 2>/dev/null & ;;
    weir) TOKIO_WORKER_THREADS=1 taskset -c 0 "${vg[@]}" "${WEIR_BIN:-./target/release/weir}" run \
      -c "$work/weir.yaml" 2>/dev/null & ;;
    # One process (no master), so the worker is the process valgrind runs.
    nginx) taskset -c 0 "${vg[@]}" nginx -g "master_process off;" -c "$work/proxy-nginx.conf" 2>/dev/null & ;;
    origin) taskset -c 0 "${vg[@]}" nginx -g "master_process off;" -c "$work/origin-nginx.conf" 2>/dev/null & ;;
    haproxy) taskset -c 0 "${vg[@]}" haproxy -db -f "$work/haproxy.cfg" >/dev/null 2>&1 & ;;
  esac
  ppid=$!
  for _ in $(seq 300); do up && break; sleep 0.1; done
  up || { echo "$name did not start under valgrind"; exit 1; }
  # A long request timeout: under valgrind a proxy is slow, and wrk would
  # reconnect every connection whose answer took longer than 2 s.
  taskset -c 1 timeout 60 wrk -t1 -c"$CONNS" -d2s --timeout 30s "$url" >/dev/null
  wpid=$ppid
  timeout 60 callgrind_control -z "$wpid" >/dev/null
  out=$(taskset -c 1 timeout $((SECS + 60)) wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 30s "$url")
  timeout 60 callgrind_control -d "$wpid" >/dev/null
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  # The dump after zeroing is the file with a part number (.1, .2, ...).
  dump=$(ls -t "$work"/cg."$wpid".* 2>/dev/null | head -1)
  # "events: Ir ..." names the columns of "summary:" (Ir alone, or with
  # the cache simulation's D1mr D1mw DLmr DLmw ...).
  counts=$(awk '/^events:/ {for (i = 2; i <= NF; i++) e[i] = $i}
    /^summary:|^totals:/ {for (i = 2; i <= NF; i++) v[e[i]] = $i; print v["Ir"], v["D1mr"] + v["D1mw"], v["DLmr"] + v["DLmw"]; exit}' "$dump")
  echo "$name $reqs $counts" >> "$work/results"
  [ "$name" = weir ] && [ -n "${CG_OUT:-}" ] && cp "$dump" "$CG_OUT"
  if [ "$name" = weir ] && [ -n "${TOP:-}" ]; then
    callgrind_annotate --inclusive=yes "$dump" 2>/dev/null | sed -n '1,60p' > "$work/weir.top"
  fi
  kill "$ppid" 2>/dev/null || true; pkill -P "$ppid" 2>/dev/null || true
  wait "$ppid" 2>/dev/null || true
done
if [ -n "${CACHE:-}" ]; then
  echo "| proxy | requests (under valgrind) | instructions / request | D1 misses / request | LL misses / request |"
  echo "|---|---|---|---|---|"
else
  echo "| proxy | requests (under valgrind) | instructions / request |"
  echo "|---|---|---|"
fi
while read -r n r i d l; do
  if [ -n "${CACHE:-}" ]; then
    echo "| $n | $r | $(python3 -c "print(f'{$i / $r:,.0f} | {$d / $r:,.1f} | {$l / $r:,.1f}')") |"
  else
    echo "| $n | $r | $(python3 -c "print(f'{$i / $r:,.0f}')") |"
  fi
done < "$work/results"
[ -f "$work/weir.top" ] && cat "$work/weir.top"
exit 0
