#!/usr/bin/env bash
# WebSocket memory and relay throughput (see benches/websocket.rs).
# weir holds two descriptors per relayed socket, so 10,000 sockets need an
# open-file limit above 20,000 for weir; the clients and the upstream run in
# separate processes. Where the hard limit is lower (containers), set
# WS_SOCKETS below half of it.
set -euo pipefail
cd "$(dirname "$0")/.."
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
WS_SOCKETS="${WS_SOCKETS:-10000}" cargo bench --bench websocket
