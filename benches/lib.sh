# Shared setup for the load scripts in benches/ (sourced, not run).
# Provides: $work (temp dir), cleanup on exit, free_port, and
# start_upstreams, which starts one nginx worker on core 1 answering
# "stable" on $sp and "canary" on $cp (loopback only; BODY=N: an N-byte
# body instead; UPSTREAM_CPU=0: on the proxy's core instead, the sidecar
# shape, where proxy and application share their pod's CPU).
work=$(mktemp -d /tmp/weir-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}" ${ppid:-}; do kill "$p" 2>/dev/null || true; done # ppid: a proxy still running
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# BODY=N (bytes): both upstreams answer an N-byte file instead of their
# name, to measure larger responses.
start_upstreams() {
  sp=$(free_port); cp=$(free_port)
  mkdir -p "$work/nginx"
  if [ -n "${BODY:-}" ]; then
    mkdir -p "$work/www"
    head -c "$BODY" /dev/zero | tr '\0' x > "$work/www/body"
    chmod a+rx "$work" "$work/www"; chmod a+r "$work/www/body" # nginx workers run as another user
  fi
  answer() { if [ -n "${BODY:-}" ]; then echo "root $work/www; try_files /body =404;"; else echo "return 200 \"$1\\n\";"; fi; }
  cat > "$work/nginx.conf" <<CFG
daemon off; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx.err warn;
events { worker_connections 30000; } worker_rlimit_nofile 20000;
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:$sp; location / { $(answer stable) } }
  server { listen 127.0.0.1:$cp; location / { $(answer canary) } } }
CFG
  taskset -c "${UPSTREAM_CPU:-1}" nginx -c "$work/nginx.conf" & pids+=($!)
}

# The three proxies configured for the same work: a 90/10 split over
# keep-alive upstream connections ($sp/$cp), HTTP/1.1 on $pp and h2c
# on $hp, access logs off, room for 9,900 client connections (HAProxy sizes
# its descriptors from maxconn: 2 per connection must fit the hard open-file
# limit, 20,000 on the machine the figures come from). $1: workers (weir's
# worker threads, nginx worker processes, HAProxy threads). With $tp set (and
# $work/tls.crt, tls.key from make_cert): TLS with ALPN h2 there.
#
# WORK=same (the default): nginx and HAProxy also do what weir does to every
# request: a per-request random split into two upstream groups, the client's
# Host kept, X-Forwarded-For/-Proto/-Host, a random X-Request-Id, and the
# route and version headers. WORK=bare: the configs the figures before the
# switch (2026-12-02) were measured with: one weighted upstream group and
# no added headers, so nginx and HAProxy did less per request than weir.
write_proxies() {
  local workers=${1:-1} weir_tls="" nginx_tls="" haproxy_tls="" nginx_loc nginx_up haproxy_front haproxy_back
  if [ "${WORK:-same}" = bare ]; then
    nginx_up="upstream split { server 127.0.0.1:$sp weight=9; server 127.0.0.1:$cp weight=1; keepalive 4096; }"
    nginx_loc="location / { proxy_pass http://split; proxy_http_version 1.1; proxy_set_header Connection \"\"; }"
    haproxy_front="  default_backend b"
    haproxy_back="backend b
  balance roundrobin
  http-reuse always
  server stable 127.0.0.1:$sp weight 90
  server canary 127.0.0.1:$cp weight 10"
  else
    nginx_up="split_clients \"\${request_id}\" \$version { 10% canary; * stable; }
  upstream stable { server 127.0.0.1:$sp; keepalive 4096; }
  upstream canary { server 127.0.0.1:$cp; keepalive 4096; }"
    nginx_loc="location / { proxy_pass http://\$version; proxy_http_version 1.1; proxy_set_header Connection \"\";
    proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto \$scheme; proxy_set_header X-Forwarded-Host \$http_host;
    proxy_set_header X-Request-Id \$request_id; proxy_set_header X-Weir-Route app;
    proxy_set_header X-Weir-Version \$version; }"
    haproxy_front="  option forwardfor
  http-request set-header X-Forwarded-Proto %[ssl_fc,iif(https,http)]
  http-request set-header X-Forwarded-Host %[req.hdr(host)]
  http-request set-header X-Request-Id %[uuid]
  http-request set-header X-Weir-Route app
  use_backend canary if { rand(100) lt 10 }
  default_backend stable"
    haproxy_back="backend stable
  http-reuse always
  http-request set-header X-Weir-Version stable
  server stable 127.0.0.1:$sp
backend canary
  http-reuse always
  http-request set-header X-Weir-Version canary
  server canary 127.0.0.1:$cp"
  fi
  if [ -n "${tp:-}" ]; then
    weir_tls=", {address: \"127.0.0.1:$tp\", tls: {certs: [{cert: \"$work/tls.crt\", key: \"$work/tls.key\"}]}}"
    nginx_tls="server { listen 127.0.0.1:$tp ssl http2; ssl_certificate $work/tls.crt; ssl_certificate_key $work/tls.key;
    $nginx_loc }"
    haproxy_tls="  bind 127.0.0.1:$tp ssl crt $work/tls.pem alpn h2,http/1.1"
  fi
  cat > "$work/weir.yaml" <<CFG
listen: [{address: "127.0.0.1:$pp"}, {address: "127.0.0.1:$hp"}$weir_tls]
admin: {address: "127.0.0.1:$ap"}
access_log: false
state_dir: $work/state
limits: {max_connections: 30000, max_in_flight: 30000}
upstreams: {stable: {endpoints: ["127.0.0.1:$sp"]}, canary: {endpoints: ["127.0.0.1:$cp"]}}
routes:
  - {name: app, stable: {upstream: stable}, canary: {upstream: canary}, weight: 10}
CFG
  mkdir -p "$work/np"
  local nginx_http="access_log off; keepalive_requests 1000000;
  client_body_temp_path $work/np; proxy_temp_path $work/np; fastcgi_temp_path $work/np;
  uwsgi_temp_path $work/np; scgi_temp_path $work/np;"
  cat > "$work/proxy-nginx.conf" <<CFG
daemon off; worker_processes $workers; worker_rlimit_nofile 20000; pid $work/np.pid; error_log $work/np.err warn;
events { worker_connections 30000; }
http { $nginx_http
  $nginx_up
  server { listen 127.0.0.1:$pp; listen 127.0.0.1:$hp http2; $nginx_loc }
  $nginx_tls }
CFG
  # "origin": nginx answering on $pp itself, proxying nothing. The cost of
  # holding the client connections alone, a floor for any proxy's growth.
  cat > "$work/origin-nginx.conf" <<CFG
daemon off; worker_processes $workers; worker_rlimit_nofile 20000; pid $work/origin.pid; error_log $work/origin.err warn;
events { worker_connections 30000; }
http { $nginx_http
  server { listen 127.0.0.1:$pp; location / { return 200 "stable\n"; } } }
CFG
  cat > "$work/haproxy.cfg" <<CFG
global
  nbthread $workers
  maxconn 9900
defaults
  mode http
  maxconn 9900
  timeout connect 1s
  timeout client 30s
  timeout server 30s
frontend f
  bind 127.0.0.1:$pp
  bind 127.0.0.1:$hp proto h2
$haproxy_tls
$haproxy_front
$haproxy_back
CFG
}

# A self-signed ECDSA P-256 certificate for bench.example in $work
# (tls.crt, tls.key, and tls.pem = both, for HAProxy).
make_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/tls.key" \
    -out "$work/tls.crt" -days 1 -subj /CN=bench.example -addext subjectAltName=DNS:bench.example 2>/dev/null
  cat "$work/tls.crt" "$work/tls.key" > "$work/tls.pem"
}

# start_proxy NAME WORKERS CPUS: start one of the three (weir-pc: weir with
# WEIR_RUNTIME=per-core; nginx-again: the same nginx a second time, for an
# A/A comparison that measures the machine's own noise; weir-base: the weir
# binary at WEIR_BASE_BIN, for an A/B of two builds) on the given cores
# (taskset list) and wait until it answers on $pp. Sets $ppid.
start_proxy() {
  local name=$1 workers=${2:-1} cpus=${3:-0}
  case $name in
    weir) TOKIO_WORKER_THREADS=$workers taskset -c "$cpus" "${WEIR_BIN:-./target/release/weir}" run -c "$work/weir.yaml" 2>/dev/null & ;;
    weir-base) TOKIO_WORKER_THREADS=$workers taskset -c "$cpus" "$WEIR_BASE_BIN" run -c "$work/weir.yaml" 2>/dev/null & ;;
    weir-pc) WEIR_RUNTIME=per-core TOKIO_WORKER_THREADS=$workers taskset -c "$cpus" "${WEIR_BIN:-./target/release/weir}" run \
      -c "$work/weir.yaml" 2>/dev/null & ;;
    nginx|nginx-again) taskset -c "$cpus" nginx -c "$work/proxy-nginx.conf" & ;;
    origin) taskset -c "$cpus" nginx -c "$work/origin-nginx.conf" & ;;
    haproxy) taskset -c "$cpus" haproxy -db -f "$work/haproxy.cfg" >/dev/null 2>&1 & ;;
  esac
  ppid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$pp/" && return; sleep 0.1; done
  echo "$name did not start"; exit 1
}
# The process doing the work: nginx's worker is the master's child.
worker_pid() { local c; c=$(pgrep -P "$ppid" | head -1 || true); echo "${c:-$ppid}"; }
# CPU ticks of the proxy's process and its children (nginx workers).
proxy_ticks() {
  local t=0 p
  for p in "$ppid" $(pgrep -P "$ppid" || true); do
    t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)))
  done
  echo "$t"
}
stop_proxy() { kill "$ppid" 2>/dev/null || true; wait "$ppid" 2>/dev/null || true; }
