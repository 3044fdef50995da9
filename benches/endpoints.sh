#!/usr/bin/env bash
# Question (issue 33): what does picking a pod cost? CPU per request and
# req/s with 1 and with 8 upstream endpoints, weir with `balance: p2c`
# against `round_robin` and against a build from before endpoints had
# counters and p2c (WEIR_BASE_BIN), side by side with nginx (round robin)
# and HAProxy (roundrobin) configured with the same endpoints and doing the
# same per-request work (Host kept, X-Forwarded-For/-Proto/-Host, a random
# X-Request-Id, route and version headers).
#
# Per round, endpoint count and proxy (each round starts with the next
# proxy in turn): one proxy worker on core 0; the upstream nginx (one
# worker, N `listen`s on 127.0.0.1) and wrk on core 1; warm up 2 s, then
# `wrk -t1 -c$CONNS -d${SECS}s` with the proxy's user+system ticks read
# around it. Loopback only; bounded by -d, timeout and ROUNDS.
#
#   WEIR_BASE_BIN=/path/to/old/weir benches/endpoints.sh   # ROUNDS=3 SECS=5 CONNS=50
#   NAMES="weir-p2c weir-rr nginx haproxy" benches/endpoints.sh   # without the old build
#   INSTR=1 WEIR_BASE_BIN=... benches/endpoints.sh   # user-space instructions per request instead
#
# INSTR=1: each proxy once per endpoint count under `valgrind --tool=callgrind`
# (counters zeroed after the warm-up, dumped after `wrk -d${SECS}s`), and
# the instructions divided by the requests. Unlike CPU time on this shared
# VM, instruction counts repeat to about 1 %, so a few percent show; but
# they leave out the kernel, most of a request's cost.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-5}; CONNS=${CONNS:-50}; ROUNDS=${ROUNDS:-3}; COUNTS=${COUNTS:-"1 8"}
NAMES=${NAMES:-"weir-p2c weir-rr weir-base nginx haproxy"}
for t in wrk nginx haproxy python3 curl; do command -v $t >/dev/null || { echo "needs $t"; exit 1; }; done
case " $NAMES " in *" weir-base "*) [ -x "${WEIR_BASE_BIN:-}" ] || { echo "weir-base needs WEIR_BASE_BIN"; exit 1; } ;; esac
[ -n "${WEIR_BIN:-}" ] || cargo build --release --quiet
WEIR_BIN=${WEIR_BIN:-./target/release/weir}
work=$(mktemp -d /tmp/weir-bench.XXXXXX)
pids=(); ppid=""
cleanup() { for p in "${pids[@]}" $ppid; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mkdir -p "$work/nginx" "$work/np"
temps="client_body_temp_path $work/np; proxy_temp_path $work/np; fastcgi_temp_path $work/np; uwsgi_temp_path $work/np; scgi_temp_path $work/np;"

# The pods: one nginx worker on core 1 listening on 8 ports.
ports=(); for _ in $(seq 8); do ports+=("$(free_port)"); done
listens=""; for p in "${ports[@]}"; do listens+="listen 127.0.0.1:$p; "; done
cat > "$work/pods.conf" <<CFG
daemon off; worker_processes 1; pid $work/pods.pid; error_log $work/pods.err warn;
events { worker_connections 30000; } worker_rlimit_nofile 20000;
http { access_log off; keepalive_requests 1000000; $temps
  server { $listens location / { return 200 "pod\n"; } } }
CFG
taskset -c 1 nginx -c "$work/pods.conf" & pids+=($!)
pp=$(free_port); ap=$(free_port)

# write_configs N: every proxy's config for N endpoints.
write_configs() {
  local n=$1 eps="" nginx_servers="" haproxy_servers="" i
  for i in $(seq 0 $((n - 1))); do
    eps+="${eps:+, }\"127.0.0.1:${ports[$i]}\""
    nginx_servers+="server 127.0.0.1:${ports[$i]}; "
    haproxy_servers+="  server pod$i 127.0.0.1:${ports[$i]}
"
  done
  for balance in p2c round_robin; do
    cat > "$work/weir-$balance.yaml" <<CFG
listen: [{address: "127.0.0.1:$pp"}]
admin: {address: "127.0.0.1:$ap"}
access_log: false
state_dir: $work/state
limits: {max_connections: 30000, max_in_flight: 30000}
upstreams: {pods: {endpoints: [$eps], balance: $balance}}
routes:
  - {name: app, stable: {upstream: pods}}
CFG
  done
  # The old build knows no `balance` key.
  sed 's/, balance: round_robin//' "$work/weir-round_robin.yaml" > "$work/weir-base.yaml"
  cat > "$work/proxy-nginx.conf" <<CFG
daemon off; worker_processes 1; worker_rlimit_nofile 20000; pid $work/np.pid; error_log $work/np.err warn;
events { worker_connections 30000; }
http { access_log off; keepalive_requests 1000000; $temps
  upstream pods { $nginx_servers keepalive 4096; }
  server { listen 127.0.0.1:$pp;
    location / { proxy_pass http://pods; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$http_host;
      proxy_set_header X-Request-Id \$request_id; proxy_set_header X-Weir-Route app;
      proxy_set_header X-Weir-Version stable; } } }
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
  bind 127.0.0.1:$pp
  option forwardfor
  http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Request-Id %[uuid]
  http-request set-header X-Weir-Route app
  default_backend pods
backend pods
  balance roundrobin
  http-reuse always
  http-request set-header X-Weir-Version stable
$haproxy_servers
CFG
}

start() {
  case $1 in
    weir-p2c) TOKIO_WORKER_THREADS=1 taskset -c 0 "$WEIR_BIN" run -c "$work/weir-p2c.yaml" 2>/dev/null & ;;
    weir-rr) TOKIO_WORKER_THREADS=1 taskset -c 0 "$WEIR_BIN" run -c "$work/weir-round_robin.yaml" 2>/dev/null & ;;
    weir-base) TOKIO_WORKER_THREADS=1 taskset -c 0 "$WEIR_BASE_BIN" run -c "$work/weir-base.yaml" 2>/dev/null & ;;
    nginx) taskset -c 0 nginx -c "$work/proxy-nginx.conf" & ;;
    haproxy) taskset -c 0 haproxy -db -f "$work/haproxy.cfg" >/dev/null 2>&1 & ;;
  esac
  ppid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$pp/" && return; sleep 0.1; done
  echo "$1 did not start"; exit 1
}
# user+system ticks of the proxy and its children (nginx's worker).
ticks() {
  local p t=0
  for p in "$ppid" $(pgrep -P "$ppid" || true); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo $t
}
hz=$(getconf CLK_TCK)
names=($NAMES)
if [ -n "${INSTR:-}" ]; then
  vg=(valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p")
  echo "| endpoints | proxy | requests (under valgrind) | instructions / request |"
  echo "|---|---|---|---|"
  for n in $COUNTS; do
    write_configs "$n"
    for name in "${names[@]}"; do
      rm -f "$work"/cg.*
      case $name in
        weir-p2c) TOKIO_WORKER_THREADS=1 taskset -c 0 "${vg[@]}" "$WEIR_BIN" run -c "$work/weir-p2c.yaml" 2>/dev/null & ;;
        weir-rr) TOKIO_WORKER_THREADS=1 taskset -c 0 "${vg[@]}" "$WEIR_BIN" run -c "$work/weir-round_robin.yaml" 2>/dev/null & ;;
        weir-base) TOKIO_WORKER_THREADS=1 taskset -c 0 "${vg[@]}" "$WEIR_BASE_BIN" run -c "$work/weir-base.yaml" 2>/dev/null & ;;
        nginx) taskset -c 0 "${vg[@]}" nginx -g "master_process off;" -c "$work/proxy-nginx.conf" 2>/dev/null & ;;
        haproxy) taskset -c 0 "${vg[@]}" haproxy -db -f "$work/haproxy.cfg" >/dev/null 2>&1 & ;;
      esac
      ppid=$!
      for _ in $(seq 300); do curl -sf -o /dev/null "http://127.0.0.1:$pp/" && break; sleep 0.1; done
      taskset -c 1 timeout 60 wrk -t1 -c"$CONNS" -d2s --timeout 30s "http://127.0.0.1:$pp/" >/dev/null
      timeout 60 callgrind_control -z "$ppid" >/dev/null
      out=$(taskset -c 1 timeout $((SECS + 60)) wrk -t1 -c"$CONNS" -d"${SECS}s" --timeout 30s "http://127.0.0.1:$pp/")
      timeout 60 callgrind_control -d "$ppid" >/dev/null
      reqs=$(awk '/requests in/ {print $1}' <<<"$out")
      dump=$(ls -t "$work"/cg."$ppid".* 2>/dev/null | head -1)
      ir=$(awk '/^summary:|^totals:/ {print $2; exit}' "$dump")
      echo "| $n | $name | $reqs | $(python3 -c "print(f'{$ir / $reqs:,.0f}')") |"
      kill "$ppid" 2>/dev/null || true; wait "$ppid" 2>/dev/null || true; ppid=""
    done
  done
  exit 0
fi
echo "endpoints proxy round req_s cpu_us_per_req"
for n in $COUNTS; do
  write_configs "$n"
  for r in $(seq "$ROUNDS"); do
    for i in "${!names[@]}"; do
      name=${names[$(( (i + r - 1) % ${#names[@]} ))]}
      start "$name"
      taskset -c 1 timeout 30 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$pp/" >/dev/null
      t0=$(ticks)
      out=$(taskset -c 1 timeout 60 wrk -t1 -c"$CONNS" -d"${SECS}s" "http://127.0.0.1:$pp/")
      t1=$(ticks)
      reqs=$(echo "$out" | awk '/requests in/ {print $1}')
      rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
      non2xx=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
      [ -z "$non2xx" ] || echo "warning: $name answered $non2xx non-2xx" >&2
      echo "$n $name $r $rps $(python3 -c "print(round(($t1 - $t0) / $hz * 1e6 / $reqs, 2))")"
      kill "$ppid"; wait "$ppid" 2>/dev/null || true; ppid=""
    done
  done
done | tee "$work/results"
echo
echo "medians (per endpoint count): req/s, CPU µs per request, and CPU per request as a ratio to weir-p2c"
python3 - "$work/results" <<'PY'
import statistics, sys, collections
rows = [l.split() for l in open(sys.argv[1]) if l[0].isdigit()]
by = collections.defaultdict(lambda: ([], []))
for n, name, _, rps, cpu in rows:
    by[(n, name)][0].append(float(rps)); by[(n, name)][1].append(float(cpu))
for n in sorted({k[0] for k in by}, key=int):
    base = statistics.median(by[(n, "weir-p2c")][1]) if (n, "weir-p2c") in by else None
    for (m, name), (rps, cpu) in sorted(by.items()):
        if m != n: continue
        c = statistics.median(cpu)
        ratio = f"{c / base:.3f}" if base else "-"
        print(f"{n} endpoints  {name:10} {statistics.median(rps):9.0f} req/s  {c:6.2f} µs/req  {ratio}")
PY
