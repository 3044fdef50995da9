#!/usr/bin/env bash
# Plugs weir into the side-by-side harness in ../shared/bench (run.sh) as the
# "ours" target: same 90/10 split, same upstreams, access log off (nginx and
# HAProxy run without logging there too). From the repo root:
#   cargo build --release
#   WEIR_BIN=$PWD/target/release/weir OURS_NAME=weir OURS_CMD=$PWD/benches/harness-weir.sh \
#     OUT=$PWD/target/bench-$(date +%s) TARGETS="direct nginx haproxy ours" ../shared/bench/run.sh
set -eu
: "${WEIR_BIN:?set WEIR_BIN to the weir binary}"
dir=$(mktemp -d /tmp/weirbench.XXXXXX)
cat >"$dir/weir.yaml" <<CFG
listen:
  - address: 127.0.0.1:$OURS_PORT
admin:
  address: 127.0.0.1:$((OURS_PORT + 10))
state_dir: $dir/state
access_log: false
upstreams:
  stable: { endpoints: [$STABLE_ADDR] }
  canary: { endpoints: [$CANARY_ADDR] }
routes:
  - name: bench
    stable: { upstream: stable, revision: "1" }
    canary: { upstream: canary, revision: "2" }
    weight: $CANARY_WEIGHT
CFG
export TOKIO_WORKER_THREADS="$WORKERS"
exec "$WEIR_BIN" run -c "$dir/weir.yaml"
