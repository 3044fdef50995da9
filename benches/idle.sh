#!/usr/bin/env bash
# Question: how much proxy memory does an idle player connection cost, one
# that made a request and now waits (HTTP/1.1 keep-alive, or h2c)? What a
# gateway holding 100,000 players must be sized for, next to the idle
# WebSockets of benches/websocket.sh.
#
# Per round, per protocol, per proxy (the benches/lib.sh configs, one
# worker on core 0): start it, make one request, read the worker's RSS;
# benches/idle.py (core 1) opens IDLE connections 100 at a time, each making
# one request and reading the answer, then holds them; read the RSS again
# and divide the growth by the connections held. The kernel's socket
# buffers are not in any process's RSS and not counted. Loopback only; the
# holder is bounded by a timeout.
#
#   benches/idle.sh                  # IDLE=9000 ROUNDS=2
#   NAMES=weir WEIR_BIN=/path/to/weir benches/idle.sh
set -euo pipefail
cd "$(dirname "$0")/.."
IDLE=${IDLE:-9000}; ROUNDS=${ROUNDS:-2}; NAMES=${NAMES:-nginx haproxy weir}
for t in nginx haproxy curl python3; do command -v $t >/dev/null || { echo "needs $t"; exit 1; }; done
python3 -c 'import h2' 2>/dev/null || { echo "needs the python h2 package"; exit 1; }
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" = unlimited ] || [ "$(ulimit -n)" -gt $((IDLE + 100)) ] || { echo "open-file limit below IDLE"; exit 1; }
[ -n "${WEIR_BIN:-}" ] || cargo build --release --quiet
. benches/lib.sh
start_upstreams
pp=$(free_port); ap=$(free_port); hp=$(free_port)
write_proxies 1
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

results="$work/idle.tsv"
for r in $(seq "$ROUNDS"); do
  for proto in h1 h2; do
    port=$pp; [ $proto = h2 ] && port=$hp
    for name in $NAMES; do
      start_proxy "$name" 1 0
      wpid=$(worker_pid)
      curl -sf -o /dev/null "http://127.0.0.1:$port/" || curl -sf --http2-prior-knowledge -o /dev/null "http://127.0.0.1:$port/"
      before=$(rss_kib "$wpid")
      coproc HOLD { taskset -c 1 timeout 300 python3 benches/idle.py "$port" "$IDLE" "$proto"; }
      line=""; read -r -t 240 line <&"${HOLD[0]}" || true
      after=$(rss_kib "$wpid")
      read -r _ ok failed <<<"$line"
      eval "exec ${HOLD[1]}>&-"; wait "$HOLD_PID" 2>/dev/null || true
      stop_proxy
      [ -n "${ok:-}" ] && [ "$ok" -gt 0 ] || { echo "$name $proto: the holder did not report ($line)"; continue; }
      per=$(python3 -c "print(round(($after - $before) / $ok, 2))")
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$proto" "$name" "$ok" "$failed" "$before" "$after" "$per" | tee -a "$results"
    done
  done
done
python3 - "$results" "$IDLE" "$ROUNDS" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1])]
print(f"\n{sys.argv[2]} idle connections, {sys.argv[3]} rounds: KiB of proxy RSS per idle connection, median (range)")
print("| proxy | HTTP/1.1 keep-alive | h2c | RSS before, MiB |")
print("|---|---|---|---|")
for name in dict.fromkeys(r[2] for r in rows):
    cells = []
    for proto in ("h1", "h2"):
        v = [float(r[7]) for r in rows if r[2] == name and r[1] == proto]
        cells.append(f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})" if v else "-")
    before = statistics.median(float(r[5]) for r in rows if r[2] == name) / 1024
    print(f"| {name} | {cells[0]} | {cells[1]} | {before:.1f} |")
PY
