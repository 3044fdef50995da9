#!/usr/bin/env bash
# Question: what do TLS handshakes and HTTPS requests cost in weir compared
# to nginx terminating TLS with the same certificate in front of the same
# upstream? One worker each, pinned to core 0; upstream (nginx) and wrk on
# core 1. Handshake rate: wrk with `Connection: close`, so every request is
# a new TLS connection (full handshake, ECDSA P-256, TLS 1.3). Throughput:
# wrk keep-alive. Rounds interleaved; medians. Loopback only.
#
#   benches/tls.sh [seconds per run, default 8] [rounds, default 3]
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh
secs=${1:-8}; rounds=${2:-3}
for t in wrk nginx openssl; do command -v $t >/dev/null || { echo "needs $t"; exit 1; }; done
cargo build --release --quiet
start_upstreams

cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=bench-ca 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key -out tls.csr -subj /CN=bench.example 2>/dev/null
printf 'subjectAltName=DNS:bench.example\n' > ext
openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out tls.crt 2>/dev/null
cd - >/dev/null

np=$(free_port); wp=$(free_port); wa=$(free_port)
mkdir -p "$work/nginx-tls"
cat > "$work/nginx-tls.conf" <<CFG
daemon off; worker_processes 1; pid $work/nginx-tls.pid; error_log $work/nginx-tls.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $work/nginx-tls; proxy_temp_path $work/nginx-tls; fastcgi_temp_path $work/nginx-tls;
  uwsgi_temp_path $work/nginx-tls; scgi_temp_path $work/nginx-tls;
  upstream stable { server 127.0.0.1:$sp; keepalive 64; }
  server { listen 127.0.0.1:$np ssl; http2 on;
    ssl_certificate $work/tls.crt; ssl_certificate_key $work/tls.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    location / { proxy_pass http://stable; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CFG
# nginx 1.22 has no `http2 on;`: fall back to `listen ... ssl http2`.
if ! nginx -t -c "$work/nginx-tls.conf" >/dev/null 2>&1; then
  sed -i "s/listen 127.0.0.1:$np ssl; http2 on;/listen 127.0.0.1:$np ssl http2;/" "$work/nginx-tls.conf"
fi
taskset -c 0 nginx -c "$work/nginx-tls.conf" & pids+=($!)

cat > "$work/weir.yaml" <<CFG
listen:
  - address: "127.0.0.1:$wp"
    tls: {certs: [{cert: "$work/tls.crt", key: "$work/tls.key"}]}
admin: {address: "127.0.0.1:$wa"}
access_log: false
state_dir: $work/state
upstreams:
  v1: {endpoints: ["127.0.0.1:$sp"]}
routes:
  - name: app
    stable: {upstream: v1}
CFG
TOKIO_WORKER_THREADS=1 taskset -c 0 ./target/release/weir run -c "$work/weir.yaml" 2>"$work/weir.log" & pids+=($!)
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$wa/ready" >/dev/null && break; sleep 0.1; done
for p in $np $wp; do
  curl -sf --cacert "$work/ca.crt" --resolve "bench.example:$p:127.0.0.1" "https://bench.example:$p/" >/dev/null \
    || { echo "TLS endpoint on $p not answering"; exit 1; }
done

declare -A hs ka
for r in $(seq "$rounds"); do
  for name in nginx weir; do
    port=$np; [ $name = weir ] && port=$wp
    h=$(taskset -c 1 wrk -t1 -c50 -d"${secs}s" -H 'Connection: close' "https://127.0.0.1:$port/" | awk '/Requests\/sec/ {print $2}')
    k=$(taskset -c 1 wrk -t1 -c50 -d"${secs}s" "https://127.0.0.1:$port/" | awk '/Requests\/sec/ {print $2}')
    echo "round $r $name: handshakes $h/s, keep-alive HTTPS $k req/s"
    hs[$name]+="$h "; ka[$name]+="$k "
  done
done
python3 - "${hs[nginx]}" "${hs[weir]}" "${ka[nginx]}" "${ka[weir]}" <<'PY'
import statistics, sys
m = [statistics.median(float(x) for x in a.split()) for a in sys.argv[1:]]
print(f"\n{'':<22}{'nginx':>10}{'weir':>10}{'weir/nginx':>12}")
print(f"{'TLS handshakes/s':<22}{m[0]:>10.0f}{m[1]:>10.0f}{m[1]/m[0]:>12.2f}")
print(f"{'HTTPS keep-alive req/s':<22}{m[2]:>10.0f}{m[3]:>10.0f}{m[3]/m[2]:>12.2f}")
PY
