#!/usr/bin/env bash
# ResNet-18 fine-tune throughput of docs/benchmarks.md ("Transfer learning"): real
# `wick train --headless` runs (ImageFolder -> threaded loader -> train step) at 64 and 224 px.
#   1. the JPEG set of the loader benchmark (bench/loader_images.py: 400 photos, 500x375 or
#      375x500, 4 class folders) as train, 2 images per class of it as val;
#   2. ImageNet-shaped ResNet-18 weights: torchvision's random init (seed 0, 1000 classes),
#      saved by torch as .pth and turned into safetensors by `wick convert` (a throughput
#      figure needs no trained weights); the 1000-class head is replaced by a 4-class one;
#   3. configs/bench/transfer-resnet18-{64,224}.toml: full fine-tune, RandomResizedCrop + flip.
# Images/s = training images of an epoch / that epoch's training seconds (the epoch lines'
# first figure, which leaves out the val pass). Needs python with torch, torchvision, pillow and
# scikit-image ($PYTHON, default python3).
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
wick="${WICK_BIN:-$target/release/wick}"
py="${PYTHON:-python3}"
cargo build --release
jpegs=/tmp/wick-loader-jpegs
[ -d "$jpegs" ] || "$py" bench/loader_images.py "$jpegs"
val=/tmp/wick-resnet18-val
if [ ! -d "$val" ]; then
  for c in "$jpegs"/*/; do
    c=$(basename "$c")
    mkdir -p "$val/$c"
    ls "$jpegs/$c" | head -2 | while read -r f; do ln -s "$jpegs/$c/$f" "$val/$c/$f"; done
  done
fi
weights=/tmp/wick-transfer/resnet18-random.safetensors
if [ ! -f "$weights" ]; then
  mkdir -p /tmp/wick-transfer
  "$py" -c "import torch, torchvision; torch.manual_seed(0); \
torch.save(torchvision.models.resnet18().state_dict(), '/tmp/wick-transfer/resnet18-random.pth')"
  "$wick" convert /tmp/wick-transfer/resnet18-random.pth "$weights"
fi
for c in transfer-resnet18-64 transfer-resnet18-224; do
  echo "$c: load before: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  /usr/bin/time -f "$c: %e s wall" "$wick" train "configs/bench/$c.toml" --headless
  echo "$c: load after: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
done
