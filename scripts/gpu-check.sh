#!/usr/bin/env bash
# The GPU check: run on a machine with an NVIDIA GPU, its driver and PyTorch (CUDA 13 build),
# no Rust toolchain or network needed. Build the binary elsewhere (scripts/build-cuda.sh), copy
# it and this repository's tracked files (bench/, data/, config.toml) there, then:
#
#   scripts/gpu-check.sh [BIN] [OUT]      (defaults: target/gpu/wick, $OUT or ./gpu-check-out)
#
# Steps (each bounded by a timeout; a failure is recorded and the next step still runs):
#  1. `wick __gpu-check`: every op and model on the training path, CPU against GPU, forward and
#     backward, f32 and bf16 autocast (src/bench/gpu.rs);
#  2. the default config (config.toml) trained with --device cuda:0, headless;
#  3. the ResNet-18 training step at 224 px, batch 64 and 256, f32 and bf16: `wick __gpu-bench`
#     beside PyTorch eager (bench/reference_gpu.py) on the same GPU, one process per
#     configuration, while nvidia-smi samples the GPU's memory every 100 ms (peak minus the
#     idle baseline: CUDA context included, the same for both);
# and writes OUT/summary.md (images/s, ratio, peak GPU memory) next to every raw output.
#
# Runtime libraries: the binary needs libcuda.so.1 (the driver) and cudart, cublas, cublasLt,
# curand (+ cudnn for a `cudnn` build) from CUDA 13. PyTorch's cu13 wheels ship them in
# site-packages/nvidia/cu13/lib and site-packages/nvidia/cudnn/lib: this script puts those on
# LD_LIBRARY_PATH (set WICK_CUDA_LIBS=dir:dir to use others).
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=${1:-target/gpu/wick}
OUT=${2:-${OUT:-gpu-check-out}}
PY=${PYTHON:-python3}
WARMUP=${WARMUP:-3}
REPS=${REPS:-10}
mkdir -p "$OUT"
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUT/steps.log"; }

if [ -z "${WICK_CUDA_LIBS:-}" ]; then
  SP=$("$PY" -c 'import os, torch; print(os.path.dirname(os.path.dirname(torch.__file__)))' 2>/dev/null)
  WICK_CUDA_LIBS=$SP/nvidia/cu13/lib:$SP/nvidia/cudnn/lib
fi
export LD_LIBRARY_PATH=$WICK_CUDA_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
log "binary $BIN ($(du -h "$BIN" | cut -f1)); LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
ldd "$BIN" > "$OUT/ldd.txt" 2>&1
if grep -q "not found" "$OUT/ldd.txt"; then log "MISSING LIBRARIES:"; grep "not found" "$OUT/ldd.txt" | tee -a "$OUT/steps.log"; fi

# 1. CPU vs GPU
log "1. op and model checks"
timeout 180 "$BIN" __gpu-check --device cuda:0 > "$OUT/gpu-check.txt" 2>&1
log "   rc=$? $(tail -1 "$OUT/gpu-check.txt")"

# 2. the default config on the GPU
log "2. default config, --device cuda:0"
timeout 240 "$BIN" train config.toml --device cuda:0 --headless > "$OUT/default-run.txt" 2>&1
rc=$?
run=$(ls -td runs/*/ 2>/dev/null | head -1)
[ -n "$run" ] && cp "$run/events.jsonl" "$OUT/default-run-events.jsonl" 2>/dev/null
log "   rc=$rc $(tail -2 "$OUT/default-run.txt" | tr '\n' ' ')"

# 3. ResNet-18 benchmark, wick and PyTorch, one process each, memory sampled by nvidia-smi
mem_now() { nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 | head -1; }
measure() { # name cmd... : runs cmd with a memory sampler; writes OUT/bench/name.{json,mem}
  local name=$1; shift
  local base; base=$(mem_now)
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -i 0 -lms 100 > "$OUT/bench/$name.mem" 2>/dev/null &
  local smi=$!
  timeout 150 "$@" > "$OUT/bench/$name.json" 2> "$OUT/bench/$name.err"
  local rc=$?
  kill "$smi" 2>/dev/null; wait "$smi" 2>/dev/null
  local peak; peak=$(sort -n "$OUT/bench/$name.mem" | tail -1)
  echo "{\"baseline_mib\": ${base:-0}, \"peak_mib\": ${peak:-0}, \"rc\": $rc}" > "$OUT/bench/$name.smi"
  log "   $name rc=$rc $(tail -c 160 "$OUT/bench/$name.json" | tr '\n' ' ')"
}
log "3. ResNet-18 224 px train step (warmup $WARMUP, $REPS timed)"
mkdir -p "$OUT/bench"
for b in 64 256; do
  for p in f32 bf16; do
    measure "wick-b$b-$p" "$BIN" __gpu-bench --device cuda:0 --arch resnet18 --px 224 --batch "$b" \
      --precision "$p" --warmup "$WARMUP" --reps "$REPS"
  done
  for m in f32 f32-tf32 bf16; do
    measure "torch-b$b-$m" "$PY" bench/reference_gpu.py --batch "$b" --mode "$m" --warmup "$WARMUP" --reps "$REPS"
  done
done

"$PY" - "$OUT" <<'EOF' | tee "$OUT/summary.md"
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        r = json.loads(open(f"{out}/bench/{name}.json").read().strip().splitlines()[-1])
    except Exception:
        r = None
    try:
        s = json.load(open(f"{out}/bench/{name}.smi"))
        peak = s["peak_mib"] - s["baseline_mib"]
    except Exception:
        peak = None
    return r, peak
gpu = open(f"{out}/nvidia-smi.txt").read()
print("# wick GPU check\n")
print("```\n" + open(f"{out}/gpu-check.txt").read().strip()[-3000:] + "\n```\n")
print("ResNet-18, 224 px, train step (forward, cross-entropy, backward, SGD momentum), median images/s;")
print("peak = nvidia-smi memory.used peak minus idle baseline (MiB, CUDA context included).\n")
print("| batch | precision | wick img/s | PyTorch img/s | ratio | wick peak MiB | PyTorch peak MiB (reserved) |")
print("|---|---|---|---|---|---|---|")
for b in (64, 256):
    for p, tm in (("f32", "f32"), ("f32", "f32-tf32"), ("bf16", "bf16")):
        w, wp = load(f"wick-b{b}-{p}")
        t, tp = load(f"torch-b{b}-{tm}")
        wi = w["images_per_s"] if w else None
        ti = t["images_per_s"] if t else None
        ratio = f"{wi / ti:.2f}x" if wi and ti else "-"
        fmt = lambda v: f"{v:.0f}" if isinstance(v, (int, float)) else "-"
        res = f" ({t['max_reserved_mib']:.0f})" if t and t.get("max_reserved_mib") else ""
        print(f"| {b} | {p} vs torch {tm} | {fmt(wi)} | {fmt(ti)} | {ratio} | {fmt(wp)} | {fmt(tp)}{res} |")
EOF
log "done: $OUT/summary.md"
