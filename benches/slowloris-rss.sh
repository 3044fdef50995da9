#!/usr/bin/env bash
# Question: does weir give memory back after a slowloris attack? Idle RSS,
# RSS while 3,000 connections trickle a request head one header every
# second (until the 10 s header deadline cuts them), and RSS 5 s and 30 s
# after the last one is gone. A plain keep-alive request burst (wrk, 2,000
# connections) is measured the same way. Loopback only; bounded in time.
#
#   benches/slowloris-rss.sh            # CONNS=3000
#   WEIR_BIN=path/to/weir benches/slowloris-rss.sh   # compare builds
set -euo pipefail
cd "$(dirname "$0")/.."
CONNS=${CONNS:-3000}
for t in curl python3 nginx; do command -v $t >/dev/null || { echo "needs $t"; exit 1; }; done
if [ -z "${WEIR_BIN:-}" ]; then cargo build --release --quiet; WEIR_BIN=./target/release/weir; fi
. benches/lib.sh
start_upstreams
ulimit -n "$(ulimit -Hn)"
pp=$(free_port); ap=$(free_port)
cat >"$work/weir.yaml" <<CFG
listen: [{address: "127.0.0.1:$pp"}]
admin: {address: "127.0.0.1:$ap"}
access_log: false
state_dir: $work/state
limits: {max_connections: 20000, header_read_timeout: 10s}
upstreams: {stable: {endpoints: ["127.0.0.1:$sp"]}, canary: {endpoints: ["127.0.0.1:$cp"]}}
routes:
  - {name: app, stable: {upstream: stable}, canary: {upstream: canary}, weight: 10}
CFG
"$WEIR_BIN" run -c "$work/weir.yaml" 2>"$work/weir.err" &
wpid=$!; pids+=($wpid)
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$pp/" && break; sleep 0.1; done
rss() { awk '/VmRSS/ {printf "%.1f", $2/1024}' /proc/$wpid/status; }
for _ in $(seq 200); do curl -sf -o /dev/null "http://127.0.0.1:$pp/"; done
echo "idle after 200 requests:  $(rss) MiB"
python3 - "$pp" "$CONNS" "$wpid" <<'PY'
import asyncio, sys, time
port, conns, pid = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
def rss():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
peak = 0.0
async def loris(i):
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
    except Exception:
        return "refused"
    w.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
    try:
        for k in range(30):  # one header a second; the 10 s deadline ends it
            await asyncio.sleep(1)
            w.write(b"X-%d: %d\r\n" % (k, i))
            await w.drain()
            if r.at_eof():
                return "cut by weir"
        return "still open after 30 s"
    except Exception:
        return "cut by weir"
    finally:
        w.close()
async def main():
    global peak
    t0 = time.monotonic()
    tasks = [asyncio.create_task(loris(i)) for i in range(conns)]
    while not all(t.done() for t in tasks) and time.monotonic() - t0 < 60:
        peak = max(peak, rss())
        await asyncio.sleep(0.5)
    outcomes = {}
    for t in tasks:
        if t.done():
            outcomes[t.result()] = outcomes.get(t.result(), 0) + 1
    print(f"slowloris {conns} connections: peak {peak:.1f} MiB; outcomes {outcomes}; {time.monotonic()-t0:.0f} s")
    await asyncio.sleep(5)
    print(f"  5 s after the last one:  {rss():.1f} MiB")
    await asyncio.sleep(25)
    print(f"  30 s after the last one: {rss():.1f} MiB")
asyncio.run(main())
PY
if command -v wrk >/dev/null; then
  wrk -t2 -c2000 -d5s "http://127.0.0.1:$pp/" >/dev/null 2>&1 || true
  echo "after a 5 s burst of 2,000 keep-alive connections (wrk): $(rss) MiB"
  sleep 5
  echo "  5 s later: $(rss) MiB"
fi
