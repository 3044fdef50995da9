# Shared setup for the load scripts in benches/ (sourced, not run).
# Provides: $work (temp dir), cleanup on exit, free_port, and
# start_upstreams, which starts one nginx worker on core 1 answering
# "stable" on $sp and "canary" on $cp (loopback only).
work=$(mktemp -d /tmp/weir-bench.XXXXXX)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_upstreams() {
  sp=$(free_port); cp=$(free_port)
  mkdir -p "$work/nginx"
  cat > "$work/nginx.conf" <<CFG
daemon off; worker_processes 1; pid $work/nginx.pid; error_log $work/nginx.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $work/nginx; proxy_temp_path $work/nginx; fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx; scgi_temp_path $work/nginx;
  server { listen 127.0.0.1:$sp; location / { return 200 "stable\n"; } }
  server { listen 127.0.0.1:$cp; location / { return 200 "canary\n"; } } }
CFG
  taskset -c 1 nginx -c "$work/nginx.conf" & pids+=($!)
}
