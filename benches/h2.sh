#!/usr/bin/env bash
# Question: how does weir's HTTP/2 downstream compare with nginx and HAProxy
# doing the same 90/10 split? h2load, 50 connections x 10 concurrent
# streams each, over h2c (prior knowledge) and over TLS with ALPN h2
# (ECDSA P-256, TLS 1.3). One worker each on core 0; upstream (nginx,
# HTTP/1.1 keep-alive) and h2load on core 1. Per round and proxy: fresh
# start, 2 s warm-up, then SECS of each; req/s and the proxy's CPU seconds
# per 100k requests. Rounds interleave the proxies, each round starting with
# the next one; medians and spread, then the ratios round by round with a
# sign test (benches/paired.py; NAMES="nginx haproxy weir nginx-again" adds
# the A/A check). Loopback only; every run bounded by -D.
#
#   benches/h2.sh                 # SECS=10 ROUNDS=3
#   ROUNDS=10 SECS=8 benches/h2.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-10}; ROUNDS=${ROUNDS:-3}; NAMES=${NAMES:-nginx haproxy weir}
for t in h2load nginx haproxy curl openssl python3; do command -v $t >/dev/null || { echo "needs $t"; exit 1; }; done
[ -n "${WEIR_BIN:-}" ] || cargo build --release --quiet
. benches/lib.sh
start_upstreams
pp=$(free_port); ap=$(free_port); hp=$(free_port); tp=$(free_port)
make_cert
write_proxies 1
results="$work/h2.tsv"
h2run() { # url -> "req/s cpu_s_per_100k"
  local out t0 t1 done_reqs
  taskset -c 1 timeout 30 h2load -D 2 -c 50 -m 10 -t 1 "$1" >/dev/null 2>&1 || true
  t0=$(proxy_ticks)
  out=$(taskset -c 1 timeout $((SECS + 30)) h2load -D "$SECS" -c 50 -m 10 -t 1 "$1" 2>&1)
  t1=$(proxy_ticks)
  done_reqs=$(awk '/^requests:/ {print $8}' <<<"$out")
  echo "$(awk '/^finished in/ {gsub(",", "", $4); print $4}' <<<"$out") \
$(python3 -c "print(round(($t1 - $t0) / $(getconf CLK_TCK) / max(${done_reqs:-0}, 1) * 100000, 3))")"
}
for r in $(seq "$ROUNDS"); do
  order=($NAMES); k=$(( (r - 1) % ${#order[@]} ))
  for name in "${order[@]:k}" "${order[@]:0:k}"; do
    start_proxy "$name" 1 0
    read -r c_rps c_cpu < <(h2run "http://127.0.0.1:$hp/")
    read -r t_rps t_cpu < <(h2run "https://127.0.0.1:$tp/")
    stop_proxy
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$name" "$c_rps" "$c_cpu" "$t_rps" "$t_cpu" | tee -a "$results"
  done
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
present = {r[1] for r in rows}
names = [n for n in ["nginx", "haproxy", "weir", "weir-base", "nginx-again"] if n in present]
def v(n, i): return [float(r[i]) for r in rows if r[1] == n and r[i] not in ("", "-")]
def med(n, i): x = v(n, i); return statistics.median(x) if x else float("nan")
print("\nh2load -c50 -m10, 1 worker on core 0, medians (spread)")
print("| | " + " | ".join(names) + " | weir/nginx | weir/HAProxy |")
print("|---|" + "---|" * (len(names) + 2))
ratio = lambda i, b: f"{med('weir', i) / med(b, i):.2f}" if b in present and "weir" in present else "-"
for label, i in [("h2c req/s", 2), ("h2c CPU s/100k", 3), ("TLS h2 req/s", 4), ("TLS h2 CPU s/100k", 5)]:
    cells = [f"{med(n, i):,.0f} ({min(v(n, i)):,.0f}–{max(v(n, i)):,.0f})" if "req" in label else f"{med(n, i):.3f}" for n in names]
    print(f"| {label} | " + " | ".join(cells) + f" | {ratio(i, 'nginx')} | {ratio(i, 'haproxy')} |")
PY
python3 benches/paired.py "$results" "h2c req/s:2:higher" "h2c CPU s/100k:3:lower" \
  "TLS h2 req/s:4:higher" "TLS h2 CPU s/100k:5:lower"
