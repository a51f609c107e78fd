#!/usr/bin/env bash
# Prune the slimming run's ViT at a recorded step and retrain the ticket with the same budget.
# REWIND=init starts from the slimming run's step-0 weights (the lottery ticket); REWIND=none from its
# weights at PRUNE_STEP (the slimming run must have kept them: SAVE_EVERY / --save-steps).
# RANDOM_SEED=<n> gives the random-pruning baseline; the ticket's variables are in launch.bash (ticket_defaults).
# PRUNE_STEP defaults to the recorded step at PRUNE_FRACTION (0.2) of the slimming run's own length (its
# results.json), so it holds whatever NUM_PROCESSES the runs use. Every variable can be set from the environment, e.g.
#   SLIM_DIR=runs/vit_slim PRUNE_STEP=300 SELF_RATIO=0.3 INTER_RATIO=0.3 bash Finetuning/scripts/prune_train_vit.bash
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$ROOT/Finetuning/scripts/launch.bash"
MODEL=${MODEL:-google/vit-base-patch16-224-in21k}   # for the image processor; the weights come from SLIM_DIR
DATASET=${DATASET:-imagenet-1k}
SLIM_DIR=${SLIM_DIR:-$ROOT/runs/vit_slim}
PRUNE_STEP=${PRUNE_STEP:-}               # empty: the recorded step at PRUNE_FRACTION (0.2) of the slimming run
ticket_defaults
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/runs/vit_ticket_step${PRUNE_STEP}_s${SELF_RATIO}_i${INTER_RATIO}_${REWIND}${RANDOM_SEED:+_random$RANDOM_SEED}}
GLOBAL_BATCH=${GLOBAL_BATCH:-256}        # the slimming run's budget: same global batch, epochs or steps
GRAD_ACCUM=${GRAD_ACCUM:-4}
EVAL_BATCH_SIZE=${EVAL_BATCH_SIZE:-128}
EPOCHS=${EPOCHS:-3}
MAX_STEPS=${MAX_STEPS:-}
LEARNING_RATE=${LEARNING_RATE:-3e-5}
WEIGHT_DECAY=${WEIGHT_DECAY:-0.0}
WARMUP_RATIO=${WARMUP_RATIO:-0.1}
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-1000}
EVAL_EVERY=${EVAL_EVERY:-2000}
SEED=${SEED:-42}
WORKERS=${WORKERS:-}                     # empty: per process, its share of the machine's CPUs (0 for data in memory)

FLAGS=(--model-name-or-path "$MODEL" --dataset "$DATASET")
ticket_flags
run_flags
launch "$ROOT/Finetuning/run_vit.py" "${FLAGS[@]}"
