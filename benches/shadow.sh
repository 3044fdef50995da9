#!/usr/bin/env bash
# Question: what does shadowing cost the primary? The same weir build, one
# worker thread, serves a route with no shadow, with 100 % shadowed to a
# healthy upstream, and with 100 % shadowed to a hung one (accepts, never
# answers; timeout 2s, max_in_flight 100). wrk (closed loop, -t1 -c50)
# drives each in turn; rounds are interleaved. Prints req/s and p50/p99 with
# ratios to "no shadow". Loopback only; every run is bounded by -d.
#
#   benches/shadow.sh [seconds per run, default 10] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
secs=${1:-10}; rounds=${2:-3}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
cargo build --release --quiet
start_upstreams

# A hung shadow: accepts and holds every connection, never answers.
hp=$(free_port)
python3 - "$hp" <<'PY' & pids+=($!)
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(4096)
held = []
end = time.time() + 3600
while time.time() < end:
    c, _ = s.accept(); held.append(c)
PY

start_weir() { # name shadow-yaml
  local port admin; port=$(free_port); admin=$(free_port)
  cat > "$work/$1.yaml" <<CFG
listen: [{address: "127.0.0.1:$port"}]
admin: {address: "127.0.0.1:$admin"}
access_log: false
state_dir: $work/state-$1
upstreams:
  v1: {endpoints: ["127.0.0.1:$sp"]}
  healthy: {endpoints: ["127.0.0.1:$cp"]}
  hung: {endpoints: ["127.0.0.1:$hp"]}
routes:
  - name: app
    stable: {upstream: v1}
$2
CFG
  TOKIO_WORKER_THREADS=1 taskset -c 0 ./target/release/weir run -c "$work/$1.yaml" 2>"$work/$1.log" & pids+=($!)
  eval "port_$1=$port"
  for _ in $(seq 100); do curl -sf "http://127.0.0.1:$admin/ready" >/dev/null && return; sleep 0.1; done
  echo "weir $1 did not start"; cat "$work/$1.log"; exit 1
}
start_weir none ""
start_weir healthy "    shadow: {upstream: healthy, percent: 100, timeout: 2s, max_in_flight: 100}"
start_weir hung "    shadow: {upstream: hung, percent: 100, timeout: 2s, max_in_flight: 100}"

declare -A rps p50 p99
for r in $(seq "$rounds"); do
  for name in none healthy hung; do
    port_var="port_$name"
    out=$(taskset -c 1 wrk -t1 -c50 -d"${secs}s" --latency "http://127.0.0.1:${!port_var}/")
    v=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    l50=$(awk '$1=="50%" {print $2}' <<<"$out"); l99=$(awk '$1=="99%" {print $2}' <<<"$out")
    echo "round $r $name: $v req/s, p50 $l50, p99 $l99"
    rps[$name]+="$v "; p50[$name]+="$l50 "; p99[$name]+="$l99 "
  done
done

# Medians across rounds; latencies converted to ms.
python3 - "${rps[none]}" "${rps[healthy]}" "${rps[hung]}" "${p50[none]}" "${p50[healthy]}" "${p50[hung]}" \
  "${p99[none]}" "${p99[healthy]}" "${p99[hung]}" <<'PY'
import statistics, sys
def ms(v):
    for unit, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if v.endswith(unit): return float(v[:-len(unit)]) * f
    return float(v)
a = sys.argv[1:]
med = lambda s, conv=float: statistics.median(conv(x) for x in s.split())
names = ["none", "healthy", "hung"]
rps = {n: med(a[i]) for i, n in enumerate(names)}
p50 = {n: med(a[3 + i], ms) for i, n in enumerate(names)}
p99 = {n: med(a[6 + i], ms) for i, n in enumerate(names)}
print(f"\n{'shadow':<10}{'req/s':>10}{'ratio':>8}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}")
for n in names:
    print(f"{n:<10}{rps[n]:>10.0f}{rps[n]/rps['none']:>8.2f}{p50[n]:>9.2f}{p99[n]:>9.2f}{p99[n]/p99['none']:>8.2f}")
PY
