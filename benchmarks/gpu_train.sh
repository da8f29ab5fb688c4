#!/usr/bin/env bash
# GPU check of the training strategies: DDP and FSDP2 (bf16 compute, fp32 reduce) on
# every GPU this machine has, one rank per GPU over NCCL, on a randomly initialised
# BERT-large-shaped teacher (~335M parameters; no download). Prints samples/s, peak
# CUDA memory per rank and MFU, and writes benchmarks/results/gpu_train.json.
# Never run in CI; run it once on a machine with GPUs:
#   bash benchmarks/gpu_train.sh                 # BERT-large, seq 128, global batch 32/GPU
#   PRESET=bert-base BATCH_PER_GPU=64 bash benchmarks/gpu_train.sh
#   DRY_RUN=1 bash benchmarks/gpu_train.sh       # CPU, 2 gloo ranks, tiny model: checks the wiring
# Needs a CUDA build of torch (make setup TORCH_SPEC="torch==2.13.0"
#   TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128").
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
export KEDRO_DISABLE_TELEMETRY=true
export PYTHONPATH="${PYTHONPATH:-$PWD/src}"

if [ "${DRY_RUN:-0}" = "1" ]; then
  exec "$PYTHON" benchmarks/memory.py --preset tiny --nproc 2 --steps 2 --batch-size 4 \
    --strategies ddp fsdp --out "${OUT:-/tmp/gpu_train_dry_run.json}"
fi

command -v nvidia-smi >/dev/null || { echo "nvidia-smi not found: no NVIDIA GPU here" >&2; exit 1; }
GPUS=$(nvidia-smi -L | wc -l)
[ "$GPUS" -ge 1 ] || { echo "no GPU listed by nvidia-smi -L" >&2; exit 1; }
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'torch has no CUDA'; print(torch.__version__, torch.cuda.get_device_name(0))"
nvidia-smi --query-gpu=index,name,memory.total --format=csv

BATCH=$(( ${BATCH_PER_GPU:-32} * GPUS ))
"$PYTHON" benchmarks/memory.py --device cuda --nproc "$GPUS" \
  --preset "${PRESET:-bert-large}" --seq "${SEQ:-128}" --batch-size "$BATCH" \
  --steps "${STEPS:-20}" --strategies ddp fsdp \
  ${PEAK_TFLOPS:+--peak-tflops "$PEAK_TFLOPS"} \
  --out "${OUT:-benchmarks/results/gpu_train.json}"

# STAGE=1: also run the real train stage (NCCL, bf16, sharded DCP checkpoints, lockstep
# validation) with each strategy on the packaged teacher and data.
if [ "${STAGE:-0}" = "1" ]; then
  KEDRO=${KEDRO:-.venv/bin/kedro}
  "$KEDRO" run --pipeline ingest
  "$KEDRO" run --pipeline validate
  "$KEDRO" run --pipeline preprocess --params "dask.scheduler=threads"
  for strategy in ddp fsdp; do
    "$KEDRO" run --pipeline train --params \
      "train_options.device=cuda,train_options.nproc=$GPUS,train_options.strategy=$strategy,train_options.batch_size=$BATCH,train_options.workdir=data/06_models/gpu_work_$strategy"
    "$PYTHON" -c "import json; s = json.load(open('data/08_reporting/teacher_train_summary.json')); print('$strategy train stage:', round(s['samples_per_s'], 1), 'samples/s on', s['world_size'], 'rank(s); best val macro-F1', round(s['best_val_macro_f1'], 4))"
  done
fi
