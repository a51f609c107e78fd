#!/usr/bin/env bash
# Train the small ViT from scratch with network slimming and record the coefficients. Defaults: the
# study's CIFAR-10 setting (7 layers, hidden 384, 12 heads, MLP 384, patch 4, 200 epochs at batch 128).
# DATASET=digits runs the embedded default (scaled-down model, a few hundred steps, offline, minutes).
# Every variable can be set from the environment; see docs/training.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DATASET=${DATASET:-cifar10}              # cifar10 (hub), digits, or a local imagefolder / save_to_disk dir
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/runs/vit_pretrain_slim}
BATCH_SIZE=${BATCH_SIZE:-}               # empty: the data set's preset (128 CIFAR, 64 digits)
GRAD_ACCUM=${GRAD_ACCUM:-1}
EPOCHS=${EPOCHS:-}                       # empty: the preset (200 CIFAR, 20 digits)
MAX_STEPS=${MAX_STEPS:-}
LEARNING_RATE=${LEARNING_RATE:-}         # empty: the preset (1e-3)
L1_SELF=${L1_SELF:-1e-4}
L1_INTER=${L1_INTER:-1e-4}
SAVE_EVERY=${SAVE_EVERY:-0}
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-2000}
EVAL_EVERY=${EVAL_EVERY:-0}
SEED=${SEED:-42}
WORKERS=${WORKERS:-4}
EXTRA_ARGS=${EXTRA_ARGS:-}               # e.g. "--num-layers 4 --hidden-size 128"

source "$ROOT/Finetuning/scripts/launch.bash"
opts=()
[[ -n $BATCH_SIZE ]] && opts+=(--per-device-train-batch-size "$BATCH_SIZE")
[[ -n $EPOCHS ]] && opts+=(--num-train-epochs "$EPOCHS")
[[ -n $MAX_STEPS ]] && opts+=(--max-steps "$MAX_STEPS")
[[ -n $LEARNING_RATE ]] && opts+=(--learning-rate "$LEARNING_RATE")
launch "$ROOT/ViT_pretraining/main.py" \
  --dataset "$DATASET" --output-dir "$OUTPUT_DIR" \
  --self-slimming --inter-slimming --l1-self "$L1_SELF" --l1-inter "$L1_INTER" \
  --gradient-accumulation-steps "$GRAD_ACCUM" --save-every "$SAVE_EVERY" --checkpoint-every "$CHECKPOINT_EVERY" \
  --eval-every "$EVAL_EVERY" --seed "$SEED" --dataloader-num-workers "$WORKERS" "${opts[@]}" $EXTRA_ARGS
