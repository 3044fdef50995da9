#!/usr/bin/env bash
# Question: over many seeds and rounds, does any client ever receive another
# client's answer when the upstream sends stray bytes at every point of an
# exchange (issue 32)? Runs tests/crossed_answers.rs's seeded harness longer
# than CI does (CI: one seed, 60 rounds of 8 clients) and prints each
# seed's tally: own answers, answers raced by the upstream itself (bytes it
# wrote while a request was already waiting: HTTP/1.1's inherent race),
# refused ones, and connections closed for stray bytes.
#
#   SEEDS="1 2 3 4 5" ROUNDS=1000 benches/crossed.sh
#
# Loopback only; bounded by SEEDS x ROUNDS (each round waits for the
# upstream's last write, at most ~10 ms of scripted delay).
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"1 2 3 4 5"}
ROUNDS=${ROUNDS:-1000}
cargo test --release --quiet --test crossed_answers --no-run
for seed in $SEEDS; do
  echo "== seed $seed, $ROUNDS rounds"
  WEIR_STRAY_SEED=$seed WEIR_STRAY_ROUNDS=$ROUNDS RUST_LOG=off \
    cargo test --release --quiet --test crossed_answers stray_bytes -- --nocapture 2>&1 \
    | grep -E "^(seed|answers|connections closed)|panicked|test result"
done
