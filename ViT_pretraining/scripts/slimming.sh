#!/usr/bin/env bash
# Train the small ViT from scratch with network slimming and record the coefficients. Defaults: the
# study's CIFAR-10 setting (7 layers, hidden 384, 12 heads, MLP 384, patch 4, 200 epochs at batch 128).
# DATASET=digits runs the embedded default (scaled-down model, a few hundred steps, offline, minutes).
# Every variable can be set from the environment (and those of Finetuning/scripts/launch.bash); see docs/training.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DATASET=${DATASET:-cifar10}              # cifar10 (hub), digits, or a local imagefolder / save_to_disk dir
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/runs/vit_pretrain_slim}
GLOBAL_BATCH=${GLOBAL_BATCH:-}           # empty: the data set's preset (128 CIFAR, 64 digits), over every process
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
WORKERS=${WORKERS:-}                     # empty: per process, its share of the machine's CPUs (0 for data in memory)

source "$ROOT/Finetuning/scripts/launch.bash"
preset_global_batch "$DATASET"
FLAGS=(--dataset "$DATASET")
slim_flags
run_flags
launch "$ROOT/ViT_pretraining/main.py" "${FLAGS[@]}"
