#!/usr/bin/env bash
# Question: per proxied request, which system calls does each proxy make?
# (Kernel time is most of a request's cost here; see docs/performance.md.)
#
# Per proxy (the benches/lib.sh configs: a 90/10 split over keep-alive
# upstreams, one worker on core 0): warm up, then `strace -c -f` on the
# worker while `wrk -t1 -c$CONNS -d${SECS}s` runs (core 1). strace slows
# the proxy many times over, so only the counts mean anything, never the
# times. Prints calls per request by syscall for the three proxies.
# Loopback only; each run bounded by -d and timeout.
#
#   benches/syscalls.sh            # SECS=5 CONNS=50
#   WEIR_BIN=/path/to/weir benches/syscalls.sh   # another weir binary, no build
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-5}; CONNS=${CONNS:-50}
for t in wrk nginx haproxy strace python3; do command -v $t >/dev/null || { echo "needs $t"; exit 1; }; done
[ -n "${WEIR_BIN:-}" ] || cargo build --release --quiet
. benches/lib.sh
start_upstreams
pp=$(free_port); ap=$(free_port); hp=$(free_port)
write_proxies 1
for name in nginx haproxy weir; do
  start_proxy "$name" 1 0
  wpid=$(worker_pid)
  taskset -c 1 timeout 30 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$pp/" >/dev/null
  # Every thread of the worker (weir's runtime threads are not the main one).
  targs=(); for t in /proc/"$wpid"/task/*; do targs+=(-p "${t##*/}"); done
  timeout $((SECS + 30)) strace -c -f -o "$work/$name.strace" "${targs[@]}" & spid=$!
  sleep 1 # strace attaches to every thread before the run starts
  out=$(taskset -c 1 timeout $((SECS + 20)) wrk -t1 -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$pp/")
  kill -INT "$spid"; wait "$spid" 2>/dev/null || true
  awk '/requests in/ {print $1}' <<<"$out" > "$work/$name.reqs"
  stop_proxy
done
python3 - "$work" <<'PY'
import sys, re, os
work = sys.argv[1]
names = ["nginx", "haproxy", "weir"]
per = {}
for n in names:
    reqs = int(open(os.path.join(work, n + ".reqs")).read().strip())
    calls = {}
    for line in open(os.path.join(work, n + ".strace")):
        f = line.split()
        if len(f) >= 5 and f[-1] not in ("syscall", "total") and re.match(r"^[0-9.]+$", f[0]):
            # % time, seconds, usecs/call, calls, [errors], syscall
            calls[f[-1]] = int(f[3])
    per[n] = {k: v / reqs for k, v in calls.items()}
    per[n]["(requests)"] = reqs
keys = sorted({k for n in names for k in per[n] if k != "(requests)"}, key=lambda k: -max(per[n].get(k, 0) for n in names))
print("| syscall per request | " + " | ".join(names) + " |")
print("|---|" + "---|" * len(names))
for k in keys:
    if max(per[n].get(k, 0) for n in names) < 0.005:
        continue
    print(f"| {k} | " + " | ".join(f"{per[n].get(k, 0):.3f}" for n in names) + " |")
print("| **total** | " + " | ".join(f"{sum(v for k, v in per[n].items() if k != '(requests)'):.2f}" for n in names) + " |")
print("| requests (under strace) | " + " | ".join(str(per[n]["(requests)"]) for n in names) + " |")
PY
