#!/usr/bin/env bash
# Fine-tune BERT-base with network slimming on SQuAD v1.1 and record the coefficients (the study's
# setting). Every variable below can be set from the environment (and those of launch.bash: BERT's data
# in bert_data_flags); see docs/training.md, e.g.
#   MODEL=/path/to/small-bert TRAIN_FILE=train.json PREDICT_FILE=dev.json MAX_STEPS=100 bash Finetuning/scripts/slim_llm.bash
#   TASK=glue TRAIN_FILE=../shared/data/sst2/train.tsv VALIDATION_FILE=.../dev.tsv TEST_FILE=.../test.tsv bash ...
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MODEL=${MODEL:-bert-base-uncased}
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/runs/bert_slim}
MAX_SEQ_LENGTH=${MAX_SEQ_LENGTH:-384}
DOC_STRIDE=${DOC_STRIDE:-128}
GLOBAL_BATCH=${GLOBAL_BATCH:-12}         # per optimizer step, over every process (the study's)
GRAD_ACCUM=${GRAD_ACCUM:-1}              # per device: GLOBAL_BATCH / (NUM_PROCESSES x GRAD_ACCUM)
EVAL_BATCH_SIZE=${EVAL_BATCH_SIZE:-64}
EPOCHS=${EPOCHS:-2}
MAX_STEPS=${MAX_STEPS:-}                 # set to override EPOCHS
LEARNING_RATE=${LEARNING_RATE:-3e-5}
WARMUP_RATIO=${WARMUP_RATIO:-0.0}
L1_SELF=${L1_SELF:-1e-4}
L1_INTER=${L1_INTER:-1e-4}
SAVE_EVERY=${SAVE_EVERY:-0}              # keep weights every N steps (needed for `--rewind none` tickets)
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-1000}
EVAL_EVERY=${EVAL_EVERY:-0}
SEED=${SEED:-42}

source "$ROOT/Finetuning/scripts/launch.bash"
FLAGS=(--model-name-or-path "$MODEL")
bert_data_flags
slim_flags
run_flags
launch "$ROOT/Finetuning/run_bert.py" "${FLAGS[@]}"
