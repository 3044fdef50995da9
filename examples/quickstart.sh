#!/usr/bin/env bash
# One command to see weir split real traffic on this machine:
#   ./examples/quickstart.sh
# Builds weir, starts two tiny upstreams (Python's http.server, one saying
# "stable", one "canary") on free loopback ports, runs weir in front of them
# at 10 % canary, sends traffic, prints the split and an `explain`, and stops
# everything on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
work=$(mktemp -d /tmp/weir-quickstart.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
for v in stable canary; do
  mkdir -p "$work/$v"; echo "$v" > "$work/$v/index.html"
done
sp=$(free_port); cp=$(free_port); wp=$(free_port); ap=$(free_port)
(cd "$work/stable" && exec python3 -m http.server "$sp" --bind 127.0.0.1 >/dev/null 2>&1) & pids+=($!)
(cd "$work/canary" && exec python3 -m http.server "$cp" --bind 127.0.0.1 >/dev/null 2>&1) & pids+=($!)
cat > "$work/weir.yaml" <<CFG
listen: [{address: 127.0.0.1:$wp}]
admin: {address: 127.0.0.1:$ap}
access_log: false
upstreams:
  v1: {endpoints: [127.0.0.1:$sp]}
  v2: {endpoints: [127.0.0.1:$cp]}
routes:
  - name: app
    stable: {upstream: v1, revision: "1.0"}
    canary: {upstream: v2, revision: "1.1"}
    weight: 10
    expose_version: true
    sticky: {keys: [header:x-player-id]}
    segments: [{name: staff, match: {header: {x-employee: "true"}}, weight: 100}]
CFG
./target/release/weir check -c "$work/weir.yaml"
./target/release/weir run -c "$work/weir.yaml" 2>"$work/weir.log" & pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$ap/ready" >/dev/null && break; sleep 0.1; done
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$sp/" >/dev/null && curl -sf "http://127.0.0.1:$cp/" >/dev/null && break; sleep 0.1; done

echo; echo "1000 anonymous requests at weight 10:"
for _ in $(seq 1000); do curl -s "http://127.0.0.1:$wp/"; done | sort | uniq -c
echo; echo "player 42, five times (sticky):"
for _ in $(seq 5); do curl -s -H 'x-player-id: 42' "http://127.0.0.1:$wp/"; done | tr '\n' ' '; echo
echo "staff segment (100 %):"
curl -s -H 'x-employee: true' "http://127.0.0.1:$wp/"
echo; echo "weir explain for player 42:"
./target/release/weir explain -c "$work/weir.yaml" --host localhost --path / --header 'x-player-id: 42'
