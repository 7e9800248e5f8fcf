#!/usr/bin/env bash
# The full benchmark suite on a GPU machine: JSON in benchmarks/out/, and the
# bench_* sections (plus input_pipeline) of benchmarks/RESULTS.md rewritten.
#
#   bash benchmarks/run_gpu.sh            # from the repository root
#
# Needs the repo's .venv with CUDA JAX and the CUDA build of torch:
#   python3.11 -m venv .venv
#   .venv/bin/pip install -e '.[test,torch]' 'jax[cuda12]'
# (torch from PyPI on Linux x86_64 is the CUDA build; the CPU-only wheel
# would time torch on the CPU and the script stops below if so.)
#
# What runs (one GPU is enough; scaling uses every visible GPU and reports
# larger counts as skipped):
#   train_step    tiny/small/base x 173/646 frames, 128 tracks per step (halved
#                 on out-of-memory), bf16 activations: JAX vs torch eager and
#                 torch.compile (bf16 autocast), MFU against the bf16 peak,
#                 memory, whether cuDNN fused attention was used
#   class_tokens  K = 1, 2, 3, 4, 8 at tiny / 173 frames
#   scaling       1, 2, 4, 8 GPUs at 128 tracks per GPU
#   input_pipeline  views/s of the data pipeline (benchmarks/input_pipeline.py)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"

"$PY" - <<'EOF'
import jax, torch
gpus = [d for d in jax.devices() if d.platform == "gpu"]
print("jax", jax.__version__, "devices:", jax.devices())
print("torch", torch.__version__, "cuda:", torch.cuda.is_available())
if not gpus:
  raise SystemExit("no GPU visible to JAX: install 'jax[cuda12]' into .venv")
if not torch.cuda.is_available():
  raise SystemExit("torch has no CUDA: install the CUDA build of torch (pip install torch)")
EOF
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true

# JAX and torch (run in subprocesses) share the GPU: JAX keeps what its pool
# grew to, so cap it at half the memory (JAX halves a batch that does not fit).
export XLA_PYTHON_CLIENT_PREALLOCATE=false
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.5}
export TF_CPP_MIN_LOG_LEVEL=3

"$PY" -m mt2_jax.cli bench --out="$OUT/bench.json" 2>&1 | tee "$OUT/bench.log"
"$PY" benchmarks/input_pipeline.py --out="$OUT/input_pipeline.json" 2>&1 | tee "$OUT/input_pipeline.log"
echo "JSON in $OUT/; sections rewritten in benchmarks/RESULTS.md"
