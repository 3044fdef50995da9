#!/usr/bin/env bash
# Question (issue 34): gRPC unary calls per second and CPU per call through
# weir (`protocol: h2c`), nginx (`grpc_pass`) and HAProxy (`proto h2`), one
# worker each, same backend, same load.
#
# The backend is one nginx worker on core 1 speaking h2c and answering every
# call like a gRPC server would: HTTP 200, `content-type: application/grpc`,
# one length-prefixed message, and the trailer `grpc-status: 0` (nginx's
# `add_trailer`). A gRPC server in Python would be the bottleneck; this one
# is not, so the proxies are what is measured. The client is h2load on core 1
# (POST with a framed 5-byte message, `te: trailers`), 50 connections x 10
# streams; the proxy alone on core 0, its user+system ticks read around the
# run. Each round starts with the next proxy in turn. Loopback only; bounded
# by -D, timeout and ROUNDS. A proxy counts only if the backend's own
# message comes back through it at start, and each run prints the backend's
# answers per call h2load finished (its stub_status; ≈ 1.0 when every call
# was forwarded), since a proxy's own gRPC error is an HTTP 200 too.
#
#   benches/grpc.sh                    # ROUNDS=3 SECS=8
#   WEIR_BIN=/path/to/weir benches/grpc.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-8}; ROUNDS=${ROUNDS:-3}; NAMES=${NAMES:-"weir nginx haproxy"}
for t in h2load nginx haproxy python3 curl; do command -v $t >/dev/null || { echo "needs $t"; exit 1; }; done
[ -n "${WEIR_BIN:-}" ] || cargo build --release --quiet
WEIR_BIN=${WEIR_BIN:-./target/release/weir}
work=$(mktemp -d /tmp/weir-bench.XXXXXX)
pids=(); ppid=""
cleanup() { for p in "${pids[@]}" $ppid; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mkdir -p "$work/www" "$work/t"
chmod a+rx "$work" "$work/www"
# A gRPC message frame: not compressed, length 5, "hello".
printf '\x00\x00\x00\x00\x05hello' > "$work/www/msg"; chmod a+r "$work/www/msg"
cp "$work/www/msg" "$work/req"
temps="client_body_temp_path $work/t; proxy_temp_path $work/t; fastcgi_temp_path $work/t; uwsgi_temp_path $work/t; scgi_temp_path $work/t;"
bp=$(free_port); pp=$(free_port); ap=$(free_port)
cat > "$work/backend.conf" <<CFG
daemon off; worker_processes 1; pid $work/backend.pid; error_log $work/backend.err warn;
events { worker_connections 30000; } worker_rlimit_nofile 20000;
http { access_log off; keepalive_requests 1000000; http2_max_concurrent_streams 1000; $temps
  server { listen 127.0.0.1:$bp http2;
    # A POST to a static file is 405 in nginx; error_page turns it into a
    # GET of the message file, answered 200 with the trailer.
    location / { error_page 405 =200 /msg; return 405; }
    location = /backend_status { stub_status; }
    location = /msg { internal; root $work/www; default_type application/grpc;
      add_trailer grpc-status 0 always; } } }
CFG
taskset -c 1 nginx -c "$work/backend.conf" & pids+=($!)
cat > "$work/weir.yaml" <<CFG
listen: [{address: "127.0.0.1:$pp"}]
admin: {address: "127.0.0.1:$ap"}
access_log: false
state_dir: $work/state
limits: {max_connections: 30000, max_in_flight: 30000}
upstreams: {game: {endpoints: ["127.0.0.1:$bp"], protocol: h2c}}
routes:
  - {name: rpc, stable: {upstream: game}}
CFG
cat > "$work/proxy-nginx.conf" <<CFG
daemon off; worker_processes 1; worker_rlimit_nofile 20000; pid $work/np.pid; error_log $work/np.err warn;
events { worker_connections 30000; }
http { access_log off; keepalive_requests 1000000; http2_max_concurrent_streams 1000; $temps
  upstream game { server 127.0.0.1:$bp; keepalive 1024; }
  server { listen 127.0.0.1:$pp http2; location / { grpc_pass grpc://game; } } }
CFG
cat > "$work/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 9900
defaults
  mode http
  maxconn 9900
  timeout connect 1s
  timeout client 30s
  timeout server 30s
frontend f
  bind 127.0.0.1:$pp proto h2
  default_backend game
backend game
  http-reuse always
  server s1 127.0.0.1:$bp proto h2
CFG
start() {
  case $1 in
    weir) TOKIO_WORKER_THREADS=1 taskset -c 0 "$WEIR_BIN" run -c "$work/weir.yaml" 2>/dev/null & ;;
    nginx) taskset -c 0 nginx -c "$work/proxy-nginx.conf" & ;;
    haproxy) taskset -c 0 haproxy -db -f "$work/haproxy.cfg" >/dev/null 2>&1 & ;;
  esac
  ppid=$!
  for _ in $(seq 100); do
    # The backend's own message must come back: a proxy's trailers-only
    # error is HTTP 200 too, and h2load would count it as a call done.
    curl -sf -m 2 --http2-prior-knowledge -o "$work/got" -H 'content-type: application/grpc' -H 'te: trailers' \
      --data-binary @"$work/req" "http://127.0.0.1:$pp/weir.test.Game/Bet" && cmp -s "$work/got" "$work/www/msg" && return
    sleep 0.1
  done
  echo "$1 did not start"; exit 1
}
# Requests the backend has answered (its stub_status), to check that the
# calls counted were forwarded.
served() { curl -s -m 2 --http2-prior-knowledge "http://127.0.0.1:$bp/backend_status" | awk '/^ *[0-9]+ +[0-9]+ +[0-9]+/ {print $3}'; }
ticks() {
  local p t=0
  for p in "$ppid" $(pgrep -P "$ppid" || true); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo $t
}
load() {
  taskset -c 1 timeout $(($1 + 30)) h2load -c 50 -m 10 -D "$1" -d "$work/req" \
    -H 'content-type: application/grpc' -H 'te: trailers' "http://127.0.0.1:$pp/weir.test.Game/Bet"
}
hz=$(getconf CLK_TCK)
names=($NAMES)
echo "proxy round calls_s cpu_us_per_call failed backend_answers_per_call"
for r in $(seq "$ROUNDS"); do
  for i in "${!names[@]}"; do
    name=${names[$(( (i + r - 1) % ${#names[@]} ))]}
    start "$name"
    load 2 >/dev/null
    s0=$(served); t0=$(ticks); out=$(load "$SECS"); t1=$(ticks); s1=$(served)
    done_n=$(awk '/^requests:/ {print $8}' <<<"$out")
    failed=$(awk '/^requests:/ {print $10}' <<<"$out")
    ok2xx=$(awk '/^status codes:/ {print $3}' <<<"$out")
    rps=$(awk '/^finished in/ {print $4}' <<<"$out")
    echo "$name $r $rps $(python3 -c "print(round(($t1 - $t0) / $hz * 1e6 / max($ok2xx, 1), 2))") $failed $(python3 -c "print(round(($s1 - $s0 - 1) / max($done_n, 1), 3))")"
    kill "$ppid"; wait "$ppid" 2>/dev/null || true; ppid=""
  done
done | tee "$work/results"
echo
python3 - "$work/results" <<'PY'
import statistics, sys, collections
rows = [l.split() for l in open(sys.argv[1]) if l.split() and l.split()[1].isdigit()]
by = collections.defaultdict(lambda: ([], []))
for name, _, rps, cpu, *_ in rows:
    by[name][0].append(float(rps)); by[name][1].append(float(cpu))
w = by.get("weir")
for name, (rps, cpu) in by.items():
    r, c = statistics.median(rps), statistics.median(cpu)
    rel = f"  weir ÷ {name}: calls/s {statistics.median(w[0]) / r:.2f}, CPU/call {statistics.median(w[1]) / c:.2f}" if w and name != "weir" else ""
    print(f"{name:8} {r:9.0f} calls/s  {c:6.2f} µs CPU/call{rel}")
PY
