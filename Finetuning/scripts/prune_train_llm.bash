#!/usr/bin/env bash
# Prune the slimming run's BERT at a recorded step and retrain the ticket with the same budget (SQuAD by
# default; TASK=glue for sentence classification). REWIND=init: from the slimming run's step-0 weights
# (the lottery ticket); REWIND=none: from its weights at PRUNE_STEP (kept with SAVE_EVERY / --save-steps).
# RANDOM_SEED=<n>: the random-pruning baseline. PRUNE_STEP defaults to the recorded step at PRUNE_FRACTION (0.2)
# of the slimming run's own length (its results.json: 2955 of the study's 14774 steps). Every variable can be set
# from the environment (the ticket's and BERT's data variables are in launch.bash).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
source "$ROOT/Finetuning/scripts/launch.bash"
MODEL=${MODEL:-bert-base-uncased}        # for the tokenizer; the weights come from SLIM_DIR
SLIM_DIR=${SLIM_DIR:-$ROOT/runs/bert_slim}
PRUNE_STEP=${PRUNE_STEP:-}               # empty: the recorded step at PRUNE_FRACTION (0.2) of the slimming run
ticket_defaults
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/runs/bert_ticket_step${PRUNE_STEP}_s${SELF_RATIO}_i${INTER_RATIO}_${REWIND}${RANDOM_SEED:+_random$RANDOM_SEED}}
MAX_SEQ_LENGTH=${MAX_SEQ_LENGTH:-384}
DOC_STRIDE=${DOC_STRIDE:-128}
GLOBAL_BATCH=${GLOBAL_BATCH:-12}         # the slimming run's budget: same global batch, epochs or steps
GRAD_ACCUM=${GRAD_ACCUM:-1}
EVAL_BATCH_SIZE=${EVAL_BATCH_SIZE:-64}
EPOCHS=${EPOCHS:-2}
MAX_STEPS=${MAX_STEPS:-}
LEARNING_RATE=${LEARNING_RATE:-3e-5}
WARMUP_RATIO=${WARMUP_RATIO:-0.0}
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-1000}
EVAL_EVERY=${EVAL_EVERY:-0}
SEED=${SEED:-42}

FLAGS=(--model-name-or-path "$MODEL")
bert_data_flags
ticket_flags
run_flags
launch "$ROOT/Finetuning/run_bert.py" "${FLAGS[@]}"
