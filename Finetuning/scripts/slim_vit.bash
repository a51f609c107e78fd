#!/usr/bin/env bash
# Fine-tune ViT-Base with network slimming and record the coefficients (the study's setting: ViT-Base
# in21k on ImageNet-1k). Every variable below can be set from the environment (and those of launch.bash);
# see docs/training.md, e.g. a quick local run:
#   MODEL=/path/to/small-vit DATASET=/path/to/imagefolder MAX_STEPS=100 GLOBAL_BATCH=8 GRAD_ACCUM=1 \
#     bash Finetuning/scripts/slim_vit.bash
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MODEL=${MODEL:-google/vit-base-patch16-224-in21k}
DATASET=${DATASET:-imagenet-1k}
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/runs/vit_slim}
GLOBAL_BATCH=${GLOBAL_BATCH:-256}        # per optimizer step, over every process (the study's 64 x 4)
GRAD_ACCUM=${GRAD_ACCUM:-4}              # per device: GLOBAL_BATCH / (NUM_PROCESSES x GRAD_ACCUM)
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
WORKERS=${WORKERS:-}                     # empty: per process, its share of the machine's CPUs (0 for data in memory)

source "$ROOT/Finetuning/scripts/launch.bash"
FLAGS=(--model-name-or-path "$MODEL" --dataset "$DATASET")
slim_flags
run_flags
launch "$ROOT/Finetuning/run_vit.py" "${FLAGS[@]}"
