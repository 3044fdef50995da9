#!/usr/bin/env bash
# Question (issue 34): HTTP/1.1 to a TLS upstream — requests per second and
# CPU per request through weir (`tls` on an http1 upstream), nginx
# (`proxy_pass https://` with `proxy_ssl_session_reuse on`, verification on,
# keep-alive upstream) and HAProxy (`ssl verify required`, `http-reuse
# always`), one worker each, same backend, same load.
#
# The backend is one nginx worker on core 1 serving TLS (a throwaway CA and
# a certificate for localhost) and answering every request 200 "ok\n". The
# client is wrk on core 1 in clear text to the proxy (50 connections); the
# proxy alone on core 0, its user+system ticks read around the run. All
# three verify the backend's certificate against the CA and the name
# localhost and keep upstream connections alive (so the TLS handshakes are
# few; what is measured is encrypting and decrypting each exchange). Each
# round starts with the next proxy in turn. Loopback only; bounded by -d,
# timeout and ROUNDS.
#
# INSTR=1: instead, each proxy once under `valgrind --tool=callgrind`:
# user-space instructions per request (they repeat within about 1 %, where
# CPU time on this VM does not; the kernel's share is not in them). TLS
# record encryption and decryption is user space, so this is where the
# proxies' TLS work differs.
#
#   benches/tls_upstream.sh                 # ROUNDS=3 SECS=8
#   WEIR_BIN=/path/to/weir benches/tls_upstream.sh
#   INSTR=1 SECS=5 benches/tls_upstream.sh  # instructions per request
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-8}; ROUNDS=${ROUNDS:-3}; NAMES=${NAMES:-"weir nginx haproxy"}
for t in wrk nginx haproxy python3 curl openssl; do command -v $t >/dev/null || { echo "needs $t"; exit 1; }; done
[ -n "${WEIR_BIN:-}" ] || cargo build --release --quiet
WEIR_BIN=${WEIR_BIN:-./target/release/weir}
work=$(mktemp -d /tmp/weir-bench.XXXXXX)
pids=(); ppid=""
cleanup() { for p in "${pids[@]}" $ppid; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mkdir -p "$work/t"; chmod a+rx "$work"
( cd "$work"
  ec="-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes"
  openssl req -x509 $ec -keyout ca.key -out ca.crt -days 1 -subj /CN=bench-ca 2>/dev/null
  openssl req $ec -keyout leaf.key -out leaf.csr -subj /CN=localhost 2>/dev/null
  printf 'subjectAltName=DNS:localhost' > leaf.ext
  openssl x509 -req -in leaf.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile leaf.ext -out leaf.crt 2>/dev/null
  chmod a+r ./*.crt ./*.key )
temps="client_body_temp_path $work/t; proxy_temp_path $work/t; fastcgi_temp_path $work/t; uwsgi_temp_path $work/t; scgi_temp_path $work/t;"
bp=$(free_port); pp=$(free_port); ap=$(free_port)
cat > "$work/backend.conf" <<CFG
daemon off; worker_processes 1; pid $work/backend.pid; error_log $work/backend.err warn;
events { worker_connections 30000; } worker_rlimit_nofile 20000;
http { access_log off; keepalive_requests 1000000; keepalive_timeout 120s; $temps
  server { listen 127.0.0.1:$bp ssl; ssl_certificate $work/leaf.crt; ssl_certificate_key $work/leaf.key;
    location / { return 200 "ok\n"; } } }
CFG
taskset -c 1 nginx -c "$work/backend.conf" & pids+=($!)
cat > "$work/weir.yaml" <<CFG
listen: [{address: "127.0.0.1:$pp"}]
admin: {address: "127.0.0.1:$ap"}
access_log: false
state_dir: $work/state
limits: {max_connections: 30000, max_in_flight: 30000}
upstreams: {app: {endpoints: ["127.0.0.1:$bp"], tls: {ca_file: "$work/ca.crt", server_name: localhost}}}
routes:
  - {name: app, stable: {upstream: app}}
CFG
cat > "$work/proxy-nginx.conf" <<CFG
daemon off; worker_processes 1; worker_rlimit_nofile 20000; pid $work/np.pid; error_log $work/np.err warn;
events { worker_connections 30000; }
http { access_log off; keepalive_requests 1000000; $temps
  upstream app { server 127.0.0.1:$bp; keepalive 1024; }
  server { listen 127.0.0.1:$pp;
    location / { proxy_pass https://app; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_ssl_session_reuse on; proxy_ssl_verify on; proxy_ssl_trusted_certificate $work/ca.crt;
      proxy_ssl_name localhost; proxy_ssl_server_name on; } } }
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
  default_backend app
backend app
  http-reuse always
  server s1 127.0.0.1:$bp ssl verify required ca-file $work/ca.crt verifyhost localhost sni str(localhost)
CFG
# Under valgrind nginx runs as one process (no master), so the worker is
# the process valgrind counts.
vg=(); ng=()
[ -n "${INSTR:-}" ] && vg=(valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p") && ng=(-g "master_process off;")
start() {
  case $1 in
    weir) TOKIO_WORKER_THREADS=1 taskset -c 0 "${vg[@]}" "$WEIR_BIN" run -c "$work/weir.yaml" 2>/dev/null & ;;
    nginx) taskset -c 0 "${vg[@]}" nginx "${ng[@]}" -c "$work/proxy-nginx.conf" 2>/dev/null & ;;
    haproxy) taskset -c 0 "${vg[@]}" haproxy -db -f "$work/haproxy.cfg" >/dev/null 2>&1 & ;;
  esac
  ppid=$!
  for _ in $(seq 300); do
    [ "$(curl -s -m 2 "http://127.0.0.1:$pp/" || true)" = ok ] && return
    sleep 0.1
  done
  echo "$1 did not start"; exit 1
}
ticks() {
  local p t=0
  for p in "$ppid" $(pgrep -P "$ppid" || true); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo $t
}
# KSTAT=1: also interrupts per request and core 1's idle share (who wakes whom).
kstat() {
  awk '/^ *RES:/ {r0=$2; r1=$3} /^ *CAL:/ {c0=$2; c1=$3} END {printf "%s %s %s %s ", r0, r1, c0, c1}' /proc/interrupts
  awk '/^cpu1 / {t=0; for (i = 2; i <= NF; i++) t += $i; print $5 + $6, t}' /proc/stat
}
load() { taskset -c 1 timeout $(($1 + 30)) wrk -t1 -c50 -d"$1"s "http://127.0.0.1:$pp/"; }
hz=$(getconf CLK_TCK)
names=($NAMES)
if [ -n "${INSTR:-}" ]; then
  echo "| proxy | requests (under valgrind) | instructions / request |"
  echo "|---|---|---|"
  for name in "${names[@]}"; do
    rm -f "$work"/cg.*
    start "$name"
    load 2 >/dev/null
    timeout 60 callgrind_control -z "$ppid" >/dev/null
    out=$(load "$SECS")
    timeout 60 callgrind_control -d "$ppid" >/dev/null
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    dump=$(ls -t "$work"/cg."$ppid".* 2>/dev/null | head -1)
    n=$(awk '/^events:/ {for (i = 2; i <= NF; i++) e[i] = $i}
      /^summary:|^totals:/ {for (i = 2; i <= NF; i++) v[e[i]] = $i; print v["Ir"]; exit}' "$dump")
    echo "| $name | $reqs | $(python3 -c "print(f'{round($n / max($reqs, 1)):,}')") |"
    kill "$ppid"; wait "$ppid" 2>/dev/null || true; ppid=""
  done
  exit 0
fi
echo "proxy round req_s cpu_us_per_req non2xx"
for r in $(seq "$ROUNDS"); do
  for i in "${!names[@]}"; do
    name=${names[$(( (i + r - 1) % ${#names[@]} ))]}
    start "$name"
    load 2 >/dev/null
    k0=$(kstat); t0=$(ticks); out=$(load "$SECS"); t1=$(ticks); k1=$(kstat)
    reqs=$(awk '/requests in/ {print $1}' <<<"$out")
    bad=$(awk '/Non-2xx/ {print $5}' <<<"$out"); bad=${bad:-0}
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    echo "$name $r $rps $(python3 -c "print(round(($t1 - $t0) / $hz * 1e6 / max($reqs, 1), 2))") $bad"
    [ -n "${KSTAT:-}" ] && python3 -c "
a, b, n = '$k0'.split(), '$k1'.split(), max($reqs, 1)
d = [int(y) - int(x) for x, y in zip(a, b)]
print(f'  {\"$name\"}: per request, rescheduling IPIs cpu0 {d[0]/n:.3f} cpu1 {d[1]/n:.3f}, function-call IPIs cpu0 {d[2]/n:.3f} cpu1 {d[3]/n:.3f}; cpu1 idle {100*d[4]/max(d[5],1):.1f} %')" >&2
    kill "$ppid"; wait "$ppid" 2>/dev/null || true; ppid=""
  done
done | tee "$work/results"
echo
python3 - "$work/results" <<'PY'
import statistics, sys, collections
rows = [l.split() for l in open(sys.argv[1]) if l.split() and l.split()[1].isdigit()]
by = collections.defaultdict(lambda: ([], []))
for name, _, rps, cpu, _b in rows:
    by[name][0].append(float(rps)); by[name][1].append(float(cpu))
w = by.get("weir")
for name, (rps, cpu) in by.items():
    r, c = statistics.median(rps), statistics.median(cpu)
    rel = f"  weir ÷ {name}: req/s {statistics.median(w[0]) / r:.2f}, CPU/req {statistics.median(w[1]) / c:.2f}" if w and name != "weir" else ""
    print(f"{name:8} {r:9.0f} req/s  {c:6.2f} µs CPU/req{rel}")
PY
