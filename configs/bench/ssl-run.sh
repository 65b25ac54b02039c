#!/usr/bin/env bash
# The self-training benchmark of docs/benchmarks.md ("Self-training"), end to end:
#   1. writes Fashion-MNIST (60,000 train + 10,000 test images) as ImageFolders under
#      /tmp/wick-fmnist-full (not committed; about 5 s);
#   2. trains the labelled-only baseline (40 labels per class) and exports its weights;
#   3. runs the self-training configs, each starting from those weights.
# Runs go to runs/ (one directory each, events.jsonl and report.md inside); headless progress
# lines and summaries go to stderr/stdout. Usage: configs/bench/ssl-run.sh [config-name ...]
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
export WICK_SSL_DATA=/tmp/wick-fmnist-full
cargo build --release
if [ ! -d "$WICK_SSL_DATA/val" ]; then
  cargo test --release --test self_training -- --ignored export_benchmark_data
fi
wick="$target/release/wick"
configs=("$@")
if [ ${#configs[@]} -eq 0 ]; then
  configs=(ssl-labelled-only ssl-rounds-global ssl-rounds-adaptive ssl-fixmatch)
fi
for c in "${configs[@]}"; do
  if [ "$c" != ssl-labelled-only ] && [ ! -f "$WICK_SSL_DATA/labelled-only.safetensors" ]; then
    echo "run ssl-labelled-only first: the self-training runs start from its weights" >&2
    exit 1
  fi
  /usr/bin/time -f "$c: %e s wall" "$wick" train "configs/bench/$c.toml" --headless
  if [ "$c" = ssl-labelled-only ]; then
    run=$(ls -dt runs/ssl-labelled-only-* | head -1)
    "$wick" export "$run" "$WICK_SSL_DATA/labelled-only.safetensors"
  fi
done
