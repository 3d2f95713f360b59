#!/bin/bash
# The benchmark on a GPU (or any) machine, as one prepared script.
#
#   bash bench/device_benchmark.sh OUTDIR
#
# Runs `--mode=benchmark` three times on the default device: float32 params at
# the default matmul precision (TF32 on NVIDIA GPUs since Ampere, as measured
# and reported), full float32 precision, and bfloat16 matmul inputs. The peak is
# measured with an 8192^3 matmul (a 2048^3 one does not fill a large GPU), and
# the model counts go up to 256, where a GPU has the work to fill it. Each
# variant writes OUTDIR/<variant>/benchmark.json and its log. Then the course's
# 36-model sweep (`configs/sweep.py`) runs as a whole process twice, with an
# empty compilation cache and with the cache that run filled, and each is
# timed from start to exit. The tables and times are printed last. PYTHON
# overrides the interpreter (default: python3).
set -u -o pipefail
out=${1:?usage: bash bench/device_benchmark.sh OUTDIR}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm \
  --format=csv 2>&1 | tee "$out/device.txt"
"$python" -c 'import jax; print("JAX", jax.__version__, jax.devices())' 2>&1 |
  tee -a "$out/device.txt"

run() {  # run VARIANT SECONDS FLAGS...
  local variant=$1 seconds=$2
  shift 2
  mkdir -p "$out/$variant"
  timeout "$seconds" "$python" main.py --mode=benchmark --config=configs/benchmark.py \
    --workdir="$out/$variant" --config.benchmark.peak_matmul_size=8192 "$@" \
    >"$out/$variant/table.md" 2>"$out/$variant/log.txt"
  echo "== $variant: exit $?"
  tail -n 3 "$out/$variant/log.txt"
}

run float32 200 --config.benchmark.num_models='(1, 27, 256)'
run float32_full 90 --config.benchmark.matmul_precision=float32 \
  --config.benchmark.hidden_sizes='(300,)' --config.benchmark.batch_sizes='(200,)'
run bfloat16 120 --config.benchmark.dtype=bfloat16 \
  --config.benchmark.hidden_sizes='(300, 1024)' --config.benchmark.batch_sizes='(200,)' \
  --config.benchmark.num_models='(1, 27, 256)'
whole() {  # whole NAME SECONDS FLAGS...: one main.py process, start to exit
  local name=$1 seconds=$2
  shift 2
  mkdir -p "$out/$name"
  local start
  start=$(date +%s%N)
  timeout "$seconds" "$python" main.py "$@" --workdir="$out/$name" \
    >"$out/$name/table.md" 2>"$out/$name/log.txt"
  local rc=$? ms=$((($(date +%s%N) - start) / 1000000))
  echo "== $name: exit $rc, $((ms / 1000)).$(printf %03d $((ms % 1000))) s as a whole process" |
    tee "$out/$name/whole_process.txt"
  tail -n 1 "$out/$name/log.txt"
}

sweep=(--mode=sweep --config=configs/sweep.py --compilation_cache_dir="$out/cache")
whole sweep_empty_cache 60 "${sweep[@]}"
whole sweep_warm_cache 60 "${sweep[@]}"
for variant in float32 float32_full bfloat16; do
  echo "== $variant"
  cat "$out/$variant/table.md"
done
cat "$out"/sweep_*/whole_process.txt
