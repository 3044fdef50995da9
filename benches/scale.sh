#!/usr/bin/env bash
# Question: does weir's cost per request stay flat as the work grows — more
# routes in the table (1 → 1,000; the matched route is the last one, behind
# 999 exact-host routes) and more client connections (50 → 5,000)? And what
# does HTTP/2 downstream (h2load, h2c prior knowledge) do compared to
# HTTP/1.1? weir only, one worker on core 0; upstream and load on core 1.
# Prints req/s and CPU seconds per 100k requests per cell. Loopback only.
#
#   benches/scale.sh                # SECS=5
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-5}
for t in wrk curl python3; do command -v $t >/dev/null || { echo "needs $t"; exit 1; }; done
cargo build --release --quiet
. benches/lib.sh
start_upstreams
ulimit -n "$(ulimit -Hn)"

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
