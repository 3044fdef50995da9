#!/usr/bin/env bash
# WebSocket memory and relay throughput (see benches/websocket.rs).
# weir holds two descriptors per relayed socket, so N sockets need an
# open-file limit above 2N for weir; the clients and the upstream run in
# separate processes. As root the script raises the hard limit itself; where
# it cannot (containers), set WS_SOCKETS below half of the hard limit.
# Every socket is a loopback connection to one address, so beyond ~28,000
# sockets the ephemeral port range must be wider: as root the script widens
# net.ipv4.ip_local_port_range for the run and puts it back on exit.
#
#   benches/websocket.sh                 # WS_SOCKETS=10000
#   WS_SOCKETS=50000 benches/websocket.sh
#   WS_MODE=rollback benches/websocket.sh   # rollback + reload under HTTP load
#   WS_MODE=rollback WS_CANARY_WEIGHT=60 WS_SOCKETS=9000 benches/websocket.sh   # ~5,400 canary sockets
# weir runs on core 0 (taskset), the clients and upstreams on core 1.
set -euo pipefail
cd "$(dirname "$0")/.."
n="${WS_SOCKETS:-10000}"
want=$((2 * n + 10000))
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want" ]; then
  ulimit -Hn "$want" 2>/dev/null || echo "cannot raise the hard open-file limit to $want (not root?)"
fi
ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"
range=/proc/sys/net/ipv4/ip_local_port_range
if [ "$n" -gt 25000 ] && [ -w "$range" ]; then
  old=$(cat "$range")
  trap 'echo "$old" > "$range"' EXIT
  echo "1024 65535" > "$range"
fi
cargo bench --bench websocket --no-run --quiet
WS_SOCKETS="$n" taskset -c 1 cargo bench --bench websocket
