#!/usr/bin/env bash
# One-command GPU recipe for the kernel prior: train, validate, export, run the CUDA tests.
#
#   bash scripts/gpu_prior.sh [TRAIN_SECONDS] [OUT_DIR]
#
# Runs from a plain checkout on a machine with torch + CUDA (no install needed: the package is
# put on PYTHONPATH). Data: DATA_DIR (default ../shared/data; the folders train/ and val/).
# Training uses the device-resident batches (data.bank) and fits its step count to
# TRAIN_SECONDS (train.time_budget_s), so the cosine schedule completes inside the budget.
# INIT=weights-name-or-path fine-tunes instead of starting from scratch (training accumulates).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-360}
out=${2:-runs/gpu-prior}
data=${DATA_DIR:-../shared/data}
mkdir -p "$out"
shim=$(mktemp -d)
ln -s "$PWD/plugins" "$shim/kdiff_plugins"
ln -s "$PWD/weights" "$shim/kdiff_weights"
export PYTHONPATH="$PWD:$shim${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
$py -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
init_args=()
[ -n "${INIT:-}" ] && init_args=(--init "$INIT")
run=${RUN_DIR:-$out/run}
$py -m kdiff_cli train kernel-diff --config configs/kernel-diff-autocorr.toml --out "$run" \
  "${init_args[@]}" \
  --set data.train_dir="$data/train" --set data.val_dir="$data/val" \
  --set train.device=${DEVICE:-cuda} --set train.threads=0 --set data.batch=${BATCH:-128} \
  --set data.bank=${BANK:-150000} --set data.bank_workers=${WORKERS:-14} \
  --set train.steps=200000 --set train.time_budget_s="$secs" --set train.lr=${LR:-5e-4} \
  --set train.warmup=300 --set train.val_every=${VAL_EVERY:-1500} --set train.ckpt_every=1000 \
  --set data.val_count=32 --set train.log_every=50 \
  --export "$out/kernel-diff-autocorr.safetensors" 2>&1 | tee "$out/train.log"
cp "$run/"*.csv "$run/"*.png "$out/" 2>/dev/null || true
# CUDA tests (those marked cuda) and a device smoke test of the exported weights
$py -m pytest -q -m cuda tests 2>&1 | tail -5 | tee "$out/cuda-tests.log" || true
