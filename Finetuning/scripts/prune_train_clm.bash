#!/usr/bin/env bash
# Prune the slimming run's decoder (Llama, Qwen3) at a recorded step and retrain the ticket as a causal LM with the
# same budget. The head masks keep the grouped-query attention rule (GQA_RULE per-group | groups); SELF_SCOPE /
# INTER_SCOPE uniform prune the same number in every layer (a ticket `earlybird export --format hf` writes as a
# standard config); ROUND_TO keeps the kept widths multiples of N. REWIND, RANDOM_SEED, PLAN: as for BERT
# (launch.bash's ticket variables). Every variable can be set from the environment.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$ROOT/Finetuning/scripts/launch.bash"
MODEL=${MODEL:-meta-llama/Llama-3.2-1B}  # for the tokenizer and the config; the weights come from SLIM_DIR
SLIM_DIR=${SLIM_DIR:-$ROOT/runs/clm_slim}
PRUNE_STEP=${PRUNE_STEP:-}               # empty: the recorded step at PRUNE_FRACTION (0.2) of the slimming run
SELF_SCOPE=${SELF_SCOPE:-uniform}
INTER_SCOPE=${INTER_SCOPE:-uniform}
ticket_defaults
GQA_RULE=${GQA_RULE:-per-group}
ROUND_TO=${ROUND_TO:-1}
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/runs/clm_ticket_step${PRUNE_STEP}_s${SELF_RATIO}_i${INTER_RATIO}_${REWIND}${RANDOM_SEED:+_random$RANDOM_SEED}}
TRAIN_FILE=${TRAIN_FILE:-}
VALIDATION_FILE=${VALIDATION_FILE:-}
DATASET_NAME=${DATASET_NAME:-}
BLOCK_SIZE=${BLOCK_SIZE:-512}
GLOBAL_BATCH=${GLOBAL_BATCH:-8}          # the slimming run's budget: same global batch, epochs or steps
GRAD_ACCUM=${GRAD_ACCUM:-1}
EVAL_BATCH_SIZE=${EVAL_BATCH_SIZE:-8}
EPOCHS=${EPOCHS:-1}
MAX_STEPS=${MAX_STEPS:-}
LEARNING_RATE=${LEARNING_RATE:-2e-5}
WARMUP_RATIO=${WARMUP_RATIO:-0.0}
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-1000}
EVAL_EVERY=${EVAL_EVERY:-0}
SEED=${SEED:-42}

FLAGS=(--model-name-or-path "$MODEL")
flags_from_env TRAIN_FILE:--train-file VALIDATION_FILE:--validation-file DATASET_NAME:--dataset-name \
  TEXT_COLUMN:--text-column BLOCK_SIZE:--block-size
ticket_flags
if [[ -z $PLAN ]]; then FLAGS+=(--gqa-rule "$GQA_RULE" --round-to "$ROUND_TO"); fi
run_flags
launch "$ROOT/Finetuning/run_clm.py" "${FLAGS[@]}"
