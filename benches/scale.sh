#!/usr/bin/env bash
# Question: does weir's cost per request stay flat as the work grows?
#
# PARTS (default "conns workers routes"):
# - conns: side by side with nginx and HAProxy, one worker each on core 0
#   (upstream and wrk on core 1), 50 vs $MANY keep-alive client connections
#   (default 9,000: each proxy holds a client and an upstream descriptor per connection, and the hard open-file limit here is 20,000 without CAP_SYS_RESOURCE): req/s and CPU seconds per 100k requests of the proxy,
#   and the growth (cost at $MANY / cost at 50). Rounds interleave proxies.
#   "origin" is nginx answering itself, proxying nothing: what holding the
#   client connections alone costs, a floor under every proxy's growth.
# - workers: side by side, 1 vs 2 workers, nothing pinned (proxy, upstream
#   and `wrk -t2 -c100` share both cores): req/s and the 2/1 ratio; weir
#   both with tokio's work-stealing scheduler and with WEIR_RUNTIME=per-core
#   (weir-pc: a single-threaded runtime per worker, SO_REUSEPORT).
# - routes: weir only, 1 → 1,000 routes (the matched route is the last one,
#   behind 999 exact-host routes), 50/500/5,000 connections, and h2c.
# Medians over $ROUNDS rounds. Loopback only; every run bounded by -d.
#
#   benches/scale.sh                # SECS=10 ROUNDS=3 MANY=9000
#   PARTS=conns ROUNDS=1 benches/scale.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-10}; ROUNDS=${ROUNDS:-3}; MANY=${MANY:-9000}; PARTS=${PARTS:-conns workers routes}
for t in wrk curl python3 nginx haproxy; do command -v $t >/dev/null || { echo "needs $t"; exit 1; }; done
cargo build --release --quiet
# $MANY client connections and as many upstream ones per proxy.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
. benches/lib.sh
start_upstreams

per100k() { python3 -c "print(round(($2 - $1) / $(getconf CLK_TCK) / $3 * 100000, 3))"; }
side="$work/side.tsv"
pp=$(free_port); ap=$(free_port); hp=$(free_port)

# One measured wrk run against the running proxy: prints "req/s cpu_s_per_100k".
measure() { # threads conns
  local out t0 t1 reqs
  timeout $((SECS + 60)) wrk -t"$1" -c"$2" -d3s "http://127.0.0.1:$pp/" >/dev/null 2>&1 || true
  t0=$(proxy_ticks)
  out=$($WRK timeout $((SECS + 60)) wrk -t"$1" -c"$2" -d"${SECS}s" "http://127.0.0.1:$pp/")
  t1=$(proxy_ticks)
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  echo "$(awk '/Requests\/sec/ {print $2}' <<<"$out") $(per100k "$t0" "$t1" "$reqs")"
}

if [[ " $PARTS " == *" conns "* ]]; then
  write_proxies 1
  WRK="taskset -c 1"
  for r in $(seq "$ROUNDS"); do
    for name in origin nginx haproxy weir; do
      for conns in 50 "$MANY"; do
        start_proxy "$name" 1 0
        read -r rps cost < <(measure 1 "$conns")
        stop_proxy
        printf 'conns\t%s\t%s\t%s\t%s\t%s\n' "$r" "$name" "$conns" "$rps" "$cost" | tee -a "$side"
      done
    done
  done
fi
if [[ " $PARTS " == *" workers "* ]]; then
  WRK=""
  for r in $(seq "$ROUNDS"); do
    for name in nginx haproxy weir weir-pc; do
      for workers in 1 2; do
        write_proxies "$workers"
        start_proxy "$name" "$workers" 0,1
        read -r rps cost < <(measure 2 100)
        stop_proxy
        printf 'workers\t%s\t%s\t%s\t%s\t%s\n' "$r" "$name" "$workers" "$rps" "$cost" | tee -a "$side"
      done
    done
  done
fi
if [ -s "$side" ]; then
  python3 - "$side" "$MANY" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
many = sys.argv[2]
def cells(part, name, key, col):
    return [float(r[col]) for r in rows if r[0] == part and r[2] == name and r[3] == key]
def med(part, name, key, col):
    v = cells(part, name, key, col)
    return statistics.median(v) if v else float("nan")
def spread(part, name, key, col):
    v = cells(part, name, key, col)
    return f"{min(v):,.0f}–{max(v):,.0f}" if v else "-"
names = ["nginx", "haproxy", "weir"]
def growth_by_round(name):
    by = {}
    for r in rows:
        if r[0] == "conns" and r[2] == name:
            by.setdefault(r[1], {})[r[3]] = float(r[5])
    return [v[many] / v["50"] for _, v in sorted(by.items()) if "50" in v and many in v]
if any(r[0] == "conns" for r in rows):
    print(f"\nconnections, 1 worker on core 0 (medians; req/s spread across rounds)")
    print(f"| | req/s @50 | req/s @{many} | CPU s/100k @50 | CPU s/100k @{many} | growth | growth by round |")
    print("|---|---|---|---|---|---|---|")
    for n in ["origin"] + names:
        if not cells("conns", n, "50", 5):
            continue
        c50, cm = med("conns", n, "50", 5), med("conns", n, many, 5)
        print(f"| {n} | {med('conns', n, '50', 4):,.0f} ({spread('conns', n, '50', 4)}) | "
              f"{med('conns', n, many, 4):,.0f} ({spread('conns', n, many, 4)}) | {c50:.3f} | {cm:.3f} | ×{cm / c50:.2f} | "
              + ", ".join(f"×{g:.2f}" for g in growth_by_round(n)) + " |")
if any(r[0] == "workers" for r in rows):
    print(f"\nworkers, nothing pinned, wrk -t2 -c100 (medians; spread across rounds)")
    print("| | req/s 1 worker | req/s 2 workers | 2/1 | CPU s/100k 1w | CPU s/100k 2w |")
    print("|---|---|---|---|---|---|")
    for n in names + ["weir-pc"]:
        a, b = med("workers", n, "1", 4), med("workers", n, "2", 4)
        print(f"| {n} | {a:,.0f} ({spread('workers', n, '1', 4)}) | {b:,.0f} ({spread('workers', n, '2', 4)}) | "
              f"×{b / a:.2f} | {med('workers', n, '1', 5):.3f} | {med('workers', n, '2', 5):.3f} |")
PY
fi
[[ " $PARTS " == *" routes "* ]] || exit 0

write_config() { # routes
  local pp=$1 ap=$2 n=$3
  {
    echo "listen: [{address: \"127.0.0.1:$pp\"}]"
    echo "admin: {address: \"127.0.0.1:$ap\"}"
    echo "access_log: false"
    echo "state_dir: $work/state"
    echo "limits: {max_connections: 20000, max_in_flight: 20000}"
    echo "upstreams: {stable: {endpoints: [\"127.0.0.1:$sp\"]}, canary: {endpoints: [\"127.0.0.1:$cp\"]}}"
    echo "routes:"
    for i in $(seq 2 "$n"); do
      echo "  - {name: r$i, match: {hosts: [h$i.example.com]}, stable: {upstream: stable}, canary: {upstream: canary}, weight: 10}"
    done
    echo "  - {name: app, stable: {upstream: stable}, canary: {upstream: canary}, weight: 10, sticky: {keys: [\"header:x-player-id\"]}}"
  } > "$work/weir.yaml"
}

run_weir() {
  TOKIO_WORKER_THREADS=1 taskset -c 0 ./target/release/weir run -c "$work/weir.yaml" 2>/dev/null &
  wpid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$pp/" && return; sleep 0.1; done
  echo "weir did not start"; exit 1
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
per100k() { python3 -c "print(round(($2 - $1) / $(getconf CLK_TCK) / $3 * 100000, 3))"; }

printf '%-8s %-8s %-6s %12s %16s\n' routes conns proto "req/s" "CPU s/100k"
for routes in 1 10 100 1000; do
  for conns in 50 500 5000; do
    [ "$routes" != 1 ] && [ "$routes" != 1000 ] && [ "$conns" != 50 ] && continue
    pp=$(free_port); ap=$(free_port)
    write_config "$pp" "$ap" "$routes"
    run_weir
    taskset -c 1 timeout 30 wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$pp/" >/dev/null 2>&1 || true
    t0=$(ticks $wpid)
    out=$(taskset -c 1 timeout $((SECS + 20)) wrk -t1 -c"$conns" -d"${SECS}s" -H 'x-player-id: p42' "http://127.0.0.1:$pp/")
    t1=$(ticks $wpid)
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    printf '%-8s %-8s %-6s %12s %16s\n' "$routes" "$conns" h1 "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" "$(per100k "$t0" "$t1" "$reqs")"
    if [ "$conns" = 50 ] && command -v h2load >/dev/null; then
      t0=$(ticks $wpid)
      h2=$(taskset -c 1 timeout $((SECS + 20)) h2load -D "$SECS" -c 50 -m 10 -t 1 -H 'x-player-id: p42' "http://127.0.0.1:$pp/" 2>&1)
      t1=$(ticks $wpid)
      done_reqs=$(awk '/^requests:/ {print $8}' <<<"$h2")
      rps=$(awk '/^finished in/ {gsub(",", "", $4); print $4}' <<<"$h2")
      printf '%-8s %-8s %-6s %12s %16s\n' "$routes" "50x10" h2c "$rps" "$(per100k "$t0" "$t1" "${done_reqs:-1}")"
    fi
    kill $wpid; wait $wpid 2>/dev/null || true
  done
done
