#!/usr/bin/env bash
# Question: on the same machine, doing the same work (a 90/10 weighted split
# over keep-alive upstreams, one worker thread each), how do weir, nginx and
# HAProxy compare in throughput, latency, CPU per request and memory?
#
# Per round, per proxy (rounds interleave the proxies): start the proxy fresh
# on core 0; warm up (wrk 2 s); closed loop `wrk -t1 -c$CONNS -d$SECS`
# (req/s, p50/p99/p99.9); open loop `oha -q $RATE` when oha is installed
# (p50/p99/p99.9 at a fixed rate all three sustain); CPU seconds the proxy
# used per 100k requests (from /proc, over the wrk run); RSS after the run.
# HTTP/2 downstream: `h2load -c$CONNS -m10` (h2c, prior knowledge) on a
# second port of each proxy (weir serves h2c on the same listener; the port
# is a separate listener only so nginx and HAProxy can be told to speak h2).
# Upstreams (one nginx) and the load generators share core 1. WORK=same
# (default) or bare: what nginx and HAProxy do per request (benches/lib.sh);
# "of which user" is the proxy's user-mode share of its CPU. Prints a table
# of medians with ratios to nginx, then the ratios round by round with a
# sign test (benches/paired.py). NAMES="nginx haproxy weir nginx-again" adds an A/A
# comparison, nginx against itself: the spread that is the machine's noise
# alone. Each round starts with the next proxy in NAMES (rotation).
# UPSTREAM_CPU=0 puts the upstream nginx on core 0 with the proxy (the
# sidecar shape); H2LOAD=0 skips the HTTP/2 part.
# Loopback only; every run bounded by -d/-z.
#
#   benches/load.sh                 # SECS=10 ROUNDS=3 CONNS=50 RATE=5000
#   NAMES="nginx haproxy weir nginx-again" ROUNDS=10 benches/load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-10}; ROUNDS=${ROUNDS:-3}; CONNS=${CONNS:-50}; RATE=${RATE:-5000}
NAMES=${NAMES:-nginx haproxy weir}
for t in wrk nginx haproxy curl python3; do command -v $t >/dev/null || { echo "needs $t"; exit 1; }; done
have_oha=0; command -v oha >/dev/null && have_oha=1
cargo build --release --quiet
. benches/lib.sh
start_upstreams
pp=$(free_port); ap=$(free_port); hp=$(free_port)
have_h2load=0; [ "${H2LOAD:-1}" != 0 ] && command -v h2load >/dev/null && have_h2load=1

cat > "$work/p999.lua" <<'LUA'
done = function(summary, latency, requests)
  io.write(string.format("LAT %d %d %d\n", latency:percentile(50), latency:percentile(99), latency:percentile(99.9)))
end
LUA
write_proxies 1
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
user_ticks() { awk '{print $14}' "/proc/$1/stat"; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

results="$work/results.tsv"
for r in $(seq "$ROUNDS"); do
  # Each round starts with a different proxy, so no proxy always runs first
  # (or right after the same neighbour).
  order=($NAMES); k=$(( (r - 1) % ${#order[@]} ))
  for name in "${order[@]:k}" "${order[@]:0:k}"; do
    start_proxy "$name" 1 0
    wpid=$(worker_pid)
    rss_idle=$(rss_kib "$wpid")
    taskset -c 1 timeout 30 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$pp/" >/dev/null
    t0=$(cpu_ticks "$wpid"); u0=$(user_ticks "$wpid")
    out=$(taskset -c 1 timeout $((SECS + 20)) wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$work/p999.lua" "http://127.0.0.1:$pp/")
    t1=$(cpu_ticks "$wpid"); u1=$(user_ticks "$wpid")
    rss=$(rss_kib "$wpid")
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    read -r l50 l99 l999 < <(awk '/^LAT/ {print $2, $3, $4}' <<<"$out")
    o50=-; o99=-; o999=-
    if [ $have_oha = 1 ]; then
      read -r o50 o99 o999 < <(taskset -c 1 timeout $((SECS + 20)) oha -z "${SECS}s" -c "$CONNS" -q "$RATE" \
        --latency-correction --no-tui --output-format json "http://127.0.0.1:$pp/" 2>/dev/null \
        | python3 -c 'import json,sys; p=json.load(sys.stdin)["latencyPercentiles"]; print(*(round(p[k]*1e6) for k in ("p50","p99","p99.9")))')
    fi
    h2=-
    if [ $have_h2load = 1 ]; then
      h2=$(taskset -c 1 timeout $((SECS + 20)) h2load -D "$SECS" -c "$CONNS" -m 10 -t 1 "http://127.0.0.1:$hp/" 2>&1 \
        | awk '/^finished in/ {gsub(",", "", $4); print $4}')
      h2=${h2:--}
    fi
    stop_proxy
    cpu100k=$(python3 -c "print(round(($t1 - $t0) / $(getconf CLK_TCK) / $reqs * 100000, 3))")
    user100k=$(python3 -c "print(round(($u1 - $u0) / $(getconf CLK_TCK) / $reqs * 100000, 3))")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$name" "$rps" "$l50" "$l99" "$l999" "$o50" "$o99" "$o999" "$cpu100k" "$rss" "$h2" "$rss_idle" "$user100k" | tee -a "$results"
  done
done

python3 - "$results" "$SECS" "$ROUNDS" "$CONNS" "$RATE" "$NAMES" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
secs, rounds, conns, rate, names = sys.argv[2:]
names = names.split()
def val(row, i):
    return float(row[i]) if row[i] not in ("-", "") else None
def med(name, i):
    vals = [val(r, i) for r in rows if r[1] == name and val(r, i) is not None]
    return statistics.median(vals) if vals else float("nan")
cols = [("req/s", 2, 1), ("wrk p50 ms", 3, 1e-3), ("wrk p99 ms", 4, 1e-3), ("wrk p99.9 ms", 5, 1e-3),
        (f"oha@{rate} p50 ms", 6, 1e-3), (f"oha@{rate} p99 ms", 7, 1e-3), (f"oha@{rate} p99.9 ms", 8, 1e-3),
        ("CPU s/100k req", 9, 1), ("of which user", 13, 1), ("RSS MiB idle", 12, 1 / 1024),
        ("RSS MiB after run", 10, 1 / 1024), ("h2load h2c req/s", 11, 1)]
fmt = lambda x: f"{x:,.0f}" if x >= 1000 else f"{x:.3g}"
# Ratios of weir to each peer in the run (and of the A/A and base pairs).
pairs = [(a, b) for a, b in [("weir", "nginx"), ("weir", "haproxy"), ("weir", "weir-base"), ("nginx-again", "nginx")]
         if a in names and b in names]
print(f"\n{secs}s runs, {rounds} interleaved rounds, {conns} connections, medians")
print("| | " + " | ".join(names + [f"{a}/{b}" for a, b in pairs]) + " |")
print("|---|" + "---|" * (len(names) + len(pairs)))
for label, i, scale in cols:
    v = {n: med(n, i) * scale for n in names}
    ratios = [f"{v[a] / v[b]:.2f}" if v[b] else "-" for a, b in pairs]
    print(f"| {label} | " + " | ".join([fmt(v[n]) for n in names] + ratios) + " |")
PY
python3 benches/paired.py "$results" "req/s:2:higher" "CPU s/100k req:9:lower" "oha@$RATE p99:7:lower" \
  "wrk p99:4:lower" "h2c req/s:11:higher"
