#!/usr/bin/env bash
# Question: per proxied request, how many TCP segments cross loopback, how
# many of them are pure ACKs, how is each proxy's CPU split between user and
# kernel, and how many page faults and context switches does it take? How
# often does it wake the processes around it (the upstream nginx, wrk, the
# other core's interrupts)? How many upstream connections does it keep?
# (Kernel time is where HAProxy's lead per core lay; see docs/performance.md,
# "The kernel gap to HAProxy, counted" and "Who a request wakes".)
#
# Per round and proxy (the benches/lib.sh configs, one worker on core 0,
# upstream nginx and wrk on core 1): warm up 2 s, then read the kernel's TCP
# counters (/proc/net/snmp, /proc/net/netstat) and the proxy's ticks, faults
# and context switches around a `wrk -t1 -c$CONNS -d${SECS}s` run, and count
# the upstream connections left open after it. The counters cover every
# socket in this network namespace (wrk, proxy, upstream), so the figures
# compare whole request paths that differ only in the proxy. Each round
# starts with the next proxy in turn. Loopback only; bounded by -d, timeout
# and ROUNDS.
#
#   benches/segments.sh                  # ROUNDS=5 SECS=5 CONNS=50
#   WEIR_BIN=/path/to/weir benches/segments.sh   # another weir binary, no build
#   NAMES="haproxy weir weir-base" WEIR_BASE_BIN=/path/to/old/weir ...  # A/B of two builds
#   BODY=1048576 benches/segments.sh     # 1 MiB answers instead of 7 bytes
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-5}; CONNS=${CONNS:-50}; ROUNDS=${ROUNDS:-5}
NAMES=${NAMES:-"nginx haproxy weir"}
for t in wrk nginx haproxy python3; do command -v $t >/dev/null || { echo "needs $t"; exit 1; }; done
[ -n "${WEIR_BIN:-}" ] || cargo build --release --quiet
. benches/lib.sh
start_upstreams
pp=$(free_port); ap=$(free_port); hp=$(free_port)
write_proxies 1
# "name value" lines: the TCP counters and the proxy's ticks, faults, switches.
snapshot() {
  awk 'FNR%2==1 {split($0, h)} FNR%2==0 && /:/ {for (i = 2; i <= NF; i++) printf "%s%s %s\n", h[1], h[i], $i}' \
    /proc/net/snmp /proc/net/netstat | grep -E '^(Tcp:(OutSegs|InSegs|RetransSegs)|TcpExt:(DelayedACKs|TCPPureAcks|TCPHPAcks|TCPRcvCoalesce|TCPBacklogCoalesce)) '
  # The proxy's (and nginx's workers') CPU split, minor page faults and
  # context switches (summed over threads).
  local p
  for p in "$ppid" $(pgrep -P "$ppid" || true); do
    awk '{print "user_ticks", $14; print "sys_ticks", $15; print "minor_faults", $10}' "/proc/$p/stat" 2>/dev/null || true
    cat /proc/"$p"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches/ {sub(":", "", $1); print $1, $2}'
  done | awk '{t[$1] += $2} END {for (k in t) print k, t[k]}'
  # Who else the request path wakes: the upstream nginx worker's context
  # switches, every context switch on the machine (wrk's included), and the
  # rescheduling and function-call interrupts each core received (a wake-up
  # of a task sleeping on the other core costs one).
  for p in $(pgrep -P "${pids[0]}" || true); do
    cat /proc/"$p"/task/*/status 2>/dev/null | awk '/^(non)?voluntary_ctxt_switches/ {print "upstream_ctxt_switches", $2}'
  done | awk '{t += $2} END {print "upstream_ctxt_switches", t + 0}'
  awk '/^ctxt/ {print "machine_ctxt_switches", $2}' /proc/stat
  awk '$1 == "RES:" || $1 == "CAL:" {k = tolower(substr($1, 1, 3)); print "ipi_" k "_core0", $2; print "ipi_" k "_core1", $3}' /proc/interrupts
}
names=($NAMES)
for r in $(seq "$ROUNDS"); do
  for i in "${!names[@]}"; do
    name=${names[$(( (i + r - 1) % ${#names[@]} ))]}
    start_proxy "$name" 1 0
    taskset -c 1 timeout 30 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$pp/" >/dev/null
    snapshot | LC_ALL=C sort > "$work/before"
    out=$(taskset -c 1 timeout $((SECS + 20)) wrk -t1 -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$pp/")
    snapshot | LC_ALL=C sort > "$work/after"
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    # Upstream connections the proxy keeps open after the run (its pool).
    echo "$r $name $reqs upstream_conns $(( $(ss -Htn state established "( dport = :$sp or dport = :$cp )" | wc -l) * reqs ))" >> "$work/rows"
    echo "$r $name $reqs req/s $(awk '/Requests\/sec/ {print $2}' <<<"$out")" >> "$work/rows"
    LC_ALL=C join "$work/before" "$work/after" | awk -v n="$name" -v r="$r" -v q="$reqs" '{print r, n, q, $1, $3 - $2}' >> "$work/rows"
    stop_proxy
  done
done
python3 - "$work/rows" "$NAMES" "$(getconf CLK_TCK)" "$work/paired.tsv" <<'PY'
import sys, statistics
rows, names, hz = sys.argv[1], sys.argv[2].split(), int(sys.argv[3])
per = {}  # (name, key) -> [per-request value by round]
rounds = {}  # (round, name) -> {key: value}, for benches/paired.py
for line in open(rows):
    r, n, reqs, key, delta = line.split()
    reqs = int(reqs)
    v = int(delta) / reqs if key != "req/s" else float(delta)
    if key.endswith("_ticks"):
        v = int(delta) / hz / reqs * 1e6  # µs per request
        key = key.replace("_ticks", " µs")
    per.setdefault((n, key), []).append(v)
    rounds.setdefault((r, n), {})[key] = v
with open(sys.argv[4], "w") as f:
    for (r, n), m in rounds.items():
        f.write(f"{r}\t{n}\t{m['req/s']}\t{m['user µs'] + m['sys µs']}\t{m['user µs']}\t{m['sys µs']}\n")
keys = sorted({k for _, k in per})
print(f"| per request (median of rounds, range) | " + " | ".join(names) + " |")
print("|---|" + "---|" * len(names))
for k in keys:
    cells = []
    for n in names:
        v = per.get((n, k), [0])
        cells.append(f"{statistics.median(v):.3f} ({min(v):.3f}–{max(v):.3f})")
    print(f"| {k} | " + " | ".join(cells) + " |")
PY
python3 benches/paired.py "$work/paired.tsv" "req/s:2:higher" "CPU µs:3:lower" "user µs:4:lower" "kernel µs:5:lower"
