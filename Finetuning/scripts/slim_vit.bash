#!/usr/bin/env bash
# Fine-tune ViT-Base with network slimming and record the coefficients (the study's setting: ViT-Base
# in21k on ImageNet-1k). Every variable below can be set from the environment; see docs/training.md,
# e.g. a quick local run:
#   MODEL=/path/to/small-vit DATASET=/path/to/imagefolder MAX_STEPS=100 BATCH_SIZE=8 bash Finetuning/scripts/slim_vit.bash
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MODEL=${MODEL:-google/vit-base-patch16-224-in21k}
DATASET=${DATASET:-imagenet-1k}
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/runs/vit_slim}
BATCH_SIZE=${BATCH_SIZE:-64}             # per device
GRAD_ACCUM=${GRAD_ACCUM:-4}              # global batch = BATCH_SIZE x NUM_PROCESSES x GRAD_ACCUM
EVAL_BATCH_SIZE=${EVAL_BATCH_SIZE:-128}
EPOCHS=${EPOCHS:-3}
MAX_STEPS=${MAX_STEPS:-}                 # set to override EPOCHS
LEARNING_RATE=${LEARNING_RATE:-3e-5}
WEIGHT_DECAY=${WEIGHT_DECAY:-0.0}
WARMUP_RATIO=${WARMUP_RATIO:-0.1}
L1_SELF=${L1_SELF:-1e-4}
L1_INTER=${L1_INTER:-1e-4}
SAVE_EVERY=${SAVE_EVERY:-0}              # keep weights every N steps (needed for `--rewind none` tickets)
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-1000}
EVAL_EVERY=${EVAL_EVERY:-2000}
SEED=${SEED:-42}
WORKERS=${WORKERS:-8}
EXTRA_ARGS=${EXTRA_ARGS:-}               # anything else, e.g. "--resume" or "--max-train-samples 1000"

source "$ROOT/Finetuning/scripts/launch.bash"
budget=(--num-train-epochs "$EPOCHS"); [[ -n $MAX_STEPS ]] && budget=(--max-steps "$MAX_STEPS")
launch "$ROOT/Finetuning/run_vit.py" \
  --model-name-or-path "$MODEL" --dataset "$DATASET" --output-dir "$OUTPUT_DIR" \
  --self-slimming --inter-slimming --l1-self "$L1_SELF" --l1-inter "$L1_INTER" \
  --per-device-train-batch-size "$BATCH_SIZE" --per-device-eval-batch-size "$EVAL_BATCH_SIZE" \
  --gradient-accumulation-steps "$GRAD_ACCUM" "${budget[@]}" --learning-rate "$LEARNING_RATE" \
  --weight-decay "$WEIGHT_DECAY" --warmup-ratio "$WARMUP_RATIO" --save-every "$SAVE_EVERY" \
  --checkpoint-every "$CHECKPOINT_EVERY" --eval-every "$EVAL_EVERY" --seed "$SEED" \
  --dataloader-num-workers "$WORKERS" $EXTRA_ARGS
