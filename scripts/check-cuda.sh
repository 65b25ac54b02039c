#!/usr/bin/env bash
# Type-check (and lint) wick with the `cuda` / `cudnn` features in minutes, without compiling
# candle's CUDA kernels: `cargo clippy --features cuda` runs candle-kernels' build script, which
# runs nvcc on every kernel (an hour or more on a small, shared machine). Here nvcc is a stand-in
# that answers version queries with the real nvcc and writes empty outputs, so everything
# type-checks but nothing can be linked or run: use scripts/build-cuda.sh for the binary.
#
#   scripts/check-cuda.sh [cuda|cudnn]      (default: cuda)
#
# Needs a CUDA root (CUDA_ROOT, default as scripts/build-cuda.sh: assembled from PyPI wheels).
# Uses its own target dir (default target/cuda-check in the repo): the empty kernels must never
# end up in a real build.
set -euo pipefail
FEATURE=${1:-cuda}
REPO=$(cd "$(dirname "$0")/.." && pwd)
CUDA_ROOT=${CUDA_ROOT:-$HOME/.cache/wick-cuda/cuda}
if [ ! -x "$CUDA_ROOT/bin/nvcc" ]; then
  W=$(dirname "$CUDA_ROOT") bash "$REPO/scripts/make-cuda-root.sh" "$CUDA_ROOT"
fi
FAKE=$(mktemp -d)
trap 'rm -rf "$FAKE"' EXIT
mkdir -p "$FAKE/bin"
for d in include lib lib64 nvvm; do ln -s "$CUDA_ROOT/$d" "$FAKE/$d"; done
cat > "$FAKE/bin/nvcc" <<EOF
#!/usr/bin/env bash
for a in "\$@"; do case "\$a" in --version|-V|--list-gpu-*) exec "$CUDA_ROOT/bin/nvcc" "\$@";; esac; done
out=""; dir=""; ptx=0; src=""; prev=""
for a in "\$@"; do
  case "\$prev" in -o|--output-file) out=\$a;; --output-directory|-odir) dir=\$a;; esac
  case "\$a" in --ptx|-ptx) ptx=1;; *.cu) src=\$a;; esac
  prev=\$a
done
if [ -z "\$out" ] && [ -n "\$dir" ] && [ -n "\$src" ]; then
  b=\$(basename "\$src" .cu); if [ \$ptx = 1 ]; then out=\$dir/\$b.ptx; else out=\$dir/\$b.o; fi
fi
[ -z "\$out" ] && exit 0
case "\$out" in
  *.o) echo 'void wick_fake_nvcc_object(void) {}' | gcc -x c -c -fPIC -o "\$out" - ;;
  *) : > "\$out" ;;
esac
EOF
chmod +x "$FAKE/bin/nvcc"
export NVCC=$FAKE/bin/nvcc CUDA_ROOT=$FAKE CUDA_PATH=$FAKE CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
export PATH=$FAKE/bin:$PATH CARGO_TARGET_DIR=${CHECK_TARGET_DIR:-$REPO/target/cuda-check}
cd "$REPO"
cargo clippy --release --features "$FEATURE" --all-targets -- -D warnings
