#!/usr/bin/env bash
# The self-training benchmark of docs/benchmarks.md ("Self-training"), end to end:
#   1. writes Fashion-MNIST (60,000 train + 10,000 test images) as ImageFolders under
#      /tmp/wick-fmnist-full (not committed; a few seconds), via an ignored test;
#   2. runs the configs one after the other, headless, each timed.
# Every config is self-contained: the self-training runs repeat the labelled-only run's
# supervised epochs (same seed, split, order and schedule) before their own phase.
# Runs go to runs/ (events.jsonl, pseudo_labels/, report.md); progress lines on stderr.
# ssl-noisy-student and ssl-teacher-finetune learn from the newest ssl-flexmatch run, exported
# here just before each.
# Usage: configs/bench/ssl-run.sh [config-name ...]   (default: all seven, the students last)
set -euo pipefail
cd "$(dirname "$0")/../.."
target="${CARGO_TARGET_DIR:-target}"
export WICK_SSL_DATA=/tmp/wick-fmnist-full
cargo build --release
if [ ! -d "$WICK_SSL_DATA/val" ]; then
  cargo test --release --test self_training -- --ignored export_benchmark_data
fi
configs=("$@")
if [ ${#configs[@]} -eq 0 ]; then
  configs=(ssl-labelled-only ssl-rounds-global ssl-rounds-adaptive ssl-fixmatch ssl-flexmatch
    ssl-noisy-student ssl-teacher-finetune)
fi
for c in "${configs[@]}"; do
  if [ "$c" = ssl-noisy-student ] || [ "$c" = ssl-teacher-finetune ]; then
    teacher=$(ls -d runs/ssl-flexmatch-* 2>/dev/null | sort | tail -n 1)
    [ -n "$teacher" ] || { echo "$c needs an ssl-flexmatch run first" >&2; exit 1; }
    "$target/release/wick" export "$teacher" /tmp/wick-ssl-teacher.safetensors
  fi
  /usr/bin/time -f "$c: %e s wall" "$target/release/wick" train "configs/bench/$c.toml" --headless
done
