#!/usr/bin/env bash
# GPU check: fine-tune the packaged teacher on one CUDA GPU (bf16 autocast, NCCL when
# nproc > 1) on the real splits and print samples/s. Run on a machine with a GPU:
#   bash benchmarks/gpu_train.sh            # default: 1 GPU, 8000 samples
# Needs network access to a CUDA PyTorch wheel index (or a CUDA torch already installed).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  make setup TORCH_SPEC="torch==2.13.0" TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128"
fi
export KEDRO_DISABLE_TELEMETRY=true
.venv/bin/python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
.venv/bin/kedro run --pipeline ingest
.venv/bin/kedro run --pipeline validate
.venv/bin/kedro run --pipeline preprocess --params "dask.scheduler=threads"
.venv/bin/kedro run --pipeline train --params \
  "train_options.device=cuda,train_options.nproc=${NPROC:-1},train_options.batch_size=128,train_options.workdir=data/06_models/gpu_work"
.venv/bin/python - <<'PY'
import json
s = json.load(open("data/08_reporting/teacher_train_summary.json"))
print(f"GPU teacher fine-tune: {s['samples_per_s']:.1f} samples/s over {s['train_samples']} samples "
      f"on {s['world_size']} rank(s); best val macro-F1 {s['best_val_macro_f1']:.4f}")
PY
