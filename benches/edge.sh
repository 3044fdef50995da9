#!/usr/bin/env bash
# Question: what does each edge policy cost per request, in weir and in
# nginx doing the same thing? Variants, each on a route for /api/:
#   base     proxy to one upstream, nothing else
#   headers  set one request header, remove another, set one response header
#   rewrite  strip the /api prefix before the upstream
#   ratelimit  a per-client-address limit far above the load (never refuses)
#   all      the three together
# nginx does the same with proxy_set_header / add_header, `rewrite … break`
# and limit_req (zone keyed by $binary_remote_addr, nodelay).
#
# Per round (rounds interleave proxies and variants, each round in a new
# order): start the proxy fresh on core 0 (one worker), warm up 2 s, then
# `wrk -t1 -c$CONNS -d$SECS` from core 1 (the upstream nginx is on core 1
# too); CPU seconds the proxy used per 100k requests from /proc. Prints
# medians and each variant's cost over its proxy's base, in percent.
# Loopback only; every run bounded by -d and timeout.
#
# INSTR=1: instead, user-space instructions per request of each variant
# under valgrind's callgrind (weir and nginx, one run each, CONNS=10):
# counts repeat to about 1 % run to run, where the timings above swing by
# tens of percent on this shared VM. The kernel's share is not counted.
#
#   benches/edge.sh                 # SECS=6 ROUNDS=3 CONNS=50
#   INSTR=1 SECS=5 benches/edge.sh  # instructions per request
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-6}; ROUNDS=${ROUNDS:-3}; CONNS=${CONNS:-50}
for t in wrk nginx curl python3; do command -v $t >/dev/null || { echo "needs $t"; exit 1; }; done
cargo build --release --quiet
. benches/lib.sh
start_upstreams
pp=$(free_port); ap=$(free_port)
VARIANTS="base headers rewrite ratelimit all"

weir_policy() {
  case $1 in
    base) ;;
    headers) echo "    request_headers: {set: {x-env: prod}, remove: [x-debug]}
    response_headers: {set: {x-frame-options: DENY}}" ;;
    rewrite) echo "    rewrite: {path_prefix: /}" ;;
    ratelimit) echo "    rate_limit: {requests: 1000000, per: 1s, burst: 1000000}" ;;
    all) weir_policy headers; weir_policy rewrite; weir_policy ratelimit ;;
  esac
}
nginx_policy() {
  case $1 in
    base) ;;
    headers) echo "proxy_set_header X-Env prod; proxy_set_header X-Debug \"\"; add_header X-Frame-Options DENY;" ;;
    rewrite) echo "rewrite ^/api/(.*)\$ /\$1 break;" ;;
    ratelimit) echo "limit_req zone=z burst=1000000 nodelay;" ;;
    all) nginx_policy headers; nginx_policy rewrite; nginx_policy ratelimit ;;
  esac
}
mkdir -p "$work/np"
for v in $VARIANTS; do
  cat > "$work/weir-$v.yaml" <<CFG
listen: [{address: "127.0.0.1:$pp"}]
admin: {address: "127.0.0.1:$ap"}
access_log: false
state_dir: $work/state
limits: {max_connections: 30000, max_in_flight: 30000}
upstreams: {stable: {endpoints: ["127.0.0.1:$sp"]}}
routes:
  - name: api
    match: {path: /api, path_type: prefix}
    stable: {upstream: stable}
$(weir_policy "$v")
CFG
  ./target/release/weir check -c "$work/weir-$v.yaml" >/dev/null
  cat > "$work/nginx-$v.conf" <<CFG
daemon off; worker_processes 1; worker_rlimit_nofile 20000; pid $work/np.pid; error_log $work/np.err warn;
events { worker_connections 30000; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $work/np; proxy_temp_path $work/np; fastcgi_temp_path $work/np;
  uwsgi_temp_path $work/np; scgi_temp_path $work/np;
  limit_req_zone \$binary_remote_addr zone=z:10m rate=1000000r/s;
  upstream up { server 127.0.0.1:$sp; keepalive 4096; }
  server { listen 127.0.0.1:$pp;
    location /api/ { $(nginx_policy "$v") proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CFG
done

run_one() { # proxy variant → "reqs ticks"
  local proxy=$1 v=$2
  if [ "$proxy" = weir ]; then
    TOKIO_WORKER_THREADS=1 taskset -c 0 ./target/release/weir run -c "$work/weir-$v.yaml" 2>/dev/null &
  else
    taskset -c 0 nginx -c "$work/nginx-$v.conf" &
  fi
  ppid=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$pp/api/x" && break; sleep 0.1; done
  taskset -c 1 timeout 30 wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$pp/api/x" >/dev/null
  local t0 t1 out reqs
  t0=$(proxy_ticks)
  out=$(taskset -c 1 timeout $((SECS + 20)) wrk -t1 -c"$CONNS" -d"${SECS}s" -H "x-debug: 1" "http://127.0.0.1:$pp/api/x")
  t1=$(proxy_ticks)
  reqs=$(echo "$out" | awk '/requests in/ {print $1}')
  if echo "$out" | grep -q "Non-2xx"; then echo "non-2xx answers from $proxy $v" >&2; exit 1; fi
  stop_proxy
  echo "$reqs $((t1 - t0))"
}

if [ -n "${INSTR:-}" ]; then
  vg=(valgrind --tool=callgrind --callgrind-out-file="$work/cg.%p")
  url="http://127.0.0.1:$pp/api/x"
  echo "| variant | weir instructions / request | cost | nginx instructions / request | cost |"
  echo "|---|---|---|---|---|"
  declare -A ir
  for p in weir nginx; do
    for v in $VARIANTS; do
      rm -f "$work"/cg.*
      if [ "$p" = weir ]; then
        TOKIO_WORKER_THREADS=1 taskset -c 0 "${vg[@]}" ./target/release/weir run -c "$work/weir-$v.yaml" 2>/dev/null &
      else
        taskset -c 0 "${vg[@]}" nginx -g "master_process off;" -c "$work/nginx-$v.conf" 2>/dev/null &
      fi
      ppid=$!
      for _ in $(seq 300); do curl -sf -o /dev/null "$url" && break; sleep 0.1; done
      taskset -c 1 timeout 60 wrk -t1 -c10 -d2s --timeout 30s -H "x-debug: 1" "$url" >/dev/null
      timeout 60 callgrind_control -z "$ppid" >/dev/null
      out=$(taskset -c 1 timeout $((SECS + 60)) wrk -t1 -c10 -d"${SECS}s" --timeout 30s -H "x-debug: 1" "$url")
      timeout 60 callgrind_control -d "$ppid" >/dev/null
      reqs=$(awk '/requests in/ {print $1}' <<<"$out")
      dump=$(ls -t "$work"/cg."$ppid".* 2>/dev/null | head -1)
      n=$(awk '/^events:/ {for (i = 2; i <= NF; i++) e[i] = $i}
        /^summary:|^totals:/ {for (i = 2; i <= NF; i++) v[e[i]] = $i; print v["Ir"]; exit}' "$dump")
      ir[$p.$v]=$(python3 -c "print(round($n / $reqs))")
      kill "$ppid" 2>/dev/null || true; wait "$ppid" 2>/dev/null || true
    done
  done
  for v in $VARIANTS; do
    python3 -c "
w, wb, n, nb = ${ir[weir.$v]}, ${ir[weir.base]}, ${ir[nginx.$v]}, ${ir[nginx.base]}
print(f'| $v | {w:,} | {100*(w/wb-1):+.1f} % | {n:,} | {100*(n/nb-1):+.1f} % |')"
  done
  exit 0
fi

results="$work/results.tsv"
combos=()
for p in weir nginx; do for v in $VARIANTS; do combos+=("$p:$v"); done; done
for r in $(seq "$ROUNDS"); do
  k=$(( (r - 1) * 3 % ${#combos[@]} ))
  for c in "${combos[@]:k}" "${combos[@]:0:k}"; do
    p=${c%%:*}; v=${c#*:}
    read -r reqs ticks < <(run_one "$p" "$v")
    echo -e "$r\t$p\t$v\t$reqs\t$ticks" >> "$results"
    echo "round $r $p $v: $reqs requests, $ticks ticks" >&2
  done
done

python3 - "$results" "$(getconf CLK_TCK)" <<'PY'
import sys, statistics as st
rows = [l.split("\t") for l in open(sys.argv[1]).read().split("\n") if l]
hz = float(sys.argv[2])
cpu = {}
for r, p, v, reqs, ticks in rows:
    cpu.setdefault((p, v), []).append(float(ticks) / hz / (int(reqs) / 1e5))
print(f"CPU seconds per 100k requests (median of {len(rows)//10} rounds) and cost over the proxy's own base")
print(f"{'variant':<10} {'weir':>8} {'cost':>8} {'nginx':>8} {'cost':>8}")
for v in ["base", "headers", "rewrite", "ratelimit", "all"]:
    w, n = st.median(cpu[("weir", v)]), st.median(cpu[("nginx", v)])
    wb, nb = st.median(cpu[("weir", "base")]), st.median(cpu[("nginx", "base")])
    print(f"{v:<10} {w:8.3f} {100*(w/wb-1):+7.1f}% {n:8.3f} {100*(n/nb-1):+7.1f}%")
print("per round, weir variant ÷ weir base of the same round:")
for v in ["headers", "rewrite", "ratelimit", "all"]:
    rounds = sorted({r for r, *_ in rows})
    ratios = []
    for r in rounds:
        b = [float(t)/int(q) for rr, p, vv, q, t in rows if rr == r and p == "weir" and vv == "base"]
        x = [float(t)/int(q) for rr, p, vv, q, t in rows if rr == r and p == "weir" and vv == v]
        if b and x: ratios.append(x[0]/b[0])
    print(f"  {v}: " + " ".join(f"{x:.3f}" for x in ratios))
PY
