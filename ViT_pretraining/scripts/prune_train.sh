#!/usr/bin/env bash
# Prune the slimming run's small ViT at a recorded step and retrain the ticket with the same budget.
# REWIND=init: from the slimming run's step-0 weights (the lottery ticket); REWIND=none: from its weights at
# PRUNE_STEP (kept with SAVE_EVERY). RANDOM_SEED=<n>: the random baseline. PRUNE_STEP defaults to the recorded step
# at PRUNE_FRACTION (0.2) of the slimming run's own length (its results.json). Variables can be set from the
# environment (the ticket's are in Finetuning/scripts/launch.bash); DATASET and the budget must match the slimming run's.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$ROOT/Finetuning/scripts/launch.bash"
DATASET=${DATASET:-cifar10}
SLIM_DIR=${SLIM_DIR:-$ROOT/runs/vit_pretrain_slim}
PRUNE_STEP=${PRUNE_STEP:-}               # empty: the recorded step at PRUNE_FRACTION (0.2) of the slimming run
ticket_defaults
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/runs/vit_pretrain_ticket_step${PRUNE_STEP}_s${SELF_RATIO}_i${INTER_RATIO}_${REWIND}${RANDOM_SEED:+_random$RANDOM_SEED}}
GLOBAL_BATCH=${GLOBAL_BATCH:-}           # empty: the data set's preset, over every process (as the slimming run)
GRAD_ACCUM=${GRAD_ACCUM:-1}
EPOCHS=${EPOCHS:-}
MAX_STEPS=${MAX_STEPS:-}
LEARNING_RATE=${LEARNING_RATE:-}
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-2000}
EVAL_EVERY=${EVAL_EVERY:-0}
SEED=${SEED:-42}
WORKERS=${WORKERS:-}                     # empty: per process, its share of the machine's CPUs (0 for data in memory)

preset_global_batch "$DATASET"
FLAGS=(--dataset "$DATASET")
ticket_flags
run_flags
launch "$ROOT/ViT_pretraining/main.py" "${FLAGS[@]}"
