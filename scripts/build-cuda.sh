#!/usr/bin/env bash
# Build the CUDA binary of wick on a machine without a CUDA toolkit (or GPU).
#
#   scripts/build-cuda.sh [cuda|cudnn]      (default: cuda)
#
# Needs: Rust, gcc, pip, unzip, network (PyPI + crates.io). The CUDA 13.0 toolkit root is assembled
# from NVIDIA's PyPI wheels by tools/make-cuda-root.sh (kept under $CUDA_ROOT, reused if present).
# Env knobs:
#   CUDA_ROOT          toolkit root (default: $HOME/.cache/wick-cuda/cuda; built if missing)
#   CUDA_COMPUTE_CAP   GPU compute capability (default 90 = H100/H200, sm_90a code only)
#   CARGO_TARGET_DIR   cargo target dir (default: target/cuda in the repo, kept apart from CPU builds)
#   NICE               niceness for the compile (default 19: the kernels take ~10 min on 2 cores)
# On a GPU box with a real CUDA toolkit (nvcc on PATH, CUDA_ROOT/CUDA_PATH set), plain
#   CUDA_COMPUTE_CAP=<cap> cargo build --release --features cuda
# is enough; this script is for building elsewhere and carrying the binary over: it leaves a
# stripped copy in target/gpu/wick, the default BIN of scripts/gpu-check.sh.
# The binary needs at run time libcuda.so.1 (GPU driver) and libcudart/libcublas/libcublasLt/libcurand
# (+ libcudnn with `cudnn`): see the README, section "GPU".
set -euo pipefail
FEATURE=${1:-cuda}
case "$FEATURE" in cuda|cudnn) ;; *) echo "usage: $0 [cuda|cudnn]" >&2; exit 2 ;; esac
REPO=$(cd "$(dirname "$0")/.." && pwd)
CUDA_ROOT=${CUDA_ROOT:-$HOME/.cache/wick-cuda/cuda}
if [ ! -x "$CUDA_ROOT/bin/nvcc" ]; then
  echo "assembling a CUDA 13.0 root from PyPI wheels in $CUDA_ROOT" >&2
  W=$(dirname "$CUDA_ROOT") bash "$REPO/scripts/make-cuda-root.sh" "$CUDA_ROOT"
fi
export CUDA_ROOT CUDA_PATH=$CUDA_ROOT CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export PATH=$CUDA_ROOT/bin:$PATH
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target/cuda}
cd "$REPO"
start=$(date +%s)
nice -n "${NICE:-19}" cargo build --release --features "$FEATURE" --bin wick
t=$(( $(date +%s) - start ))
bin=$CARGO_TARGET_DIR/release/wick
# The release profile keeps debug info; the copy to carry to the GPU machine is stripped.
mkdir -p "$REPO/target/gpu"
cp "$bin" "$REPO/target/gpu/wick" && strip "$REPO/target/gpu/wick"
echo "built $bin ($(du -h "$bin" | cut -f1)) with --features $FEATURE in ${t}s;" \
  "stripped copy: target/gpu/wick ($(du -h "$REPO/target/gpu/wick" | cut -f1))" >&2
