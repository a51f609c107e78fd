#!/usr/bin/env bash
# Fine-tune BERT-base with network slimming on SQuAD v1.1 and record the coefficients (the study's
# setting). Every variable below can be set from the environment; see docs/training.md, e.g.
#   MODEL=/path/to/small-bert TRAIN_FILE=train.json PREDICT_FILE=dev.json MAX_STEPS=100 bash Finetuning/scripts/slim_llm.bash
#   TASK=glue TRAIN_FILE=../shared/data/sst2/train.tsv VALIDATION_FILE=.../dev.tsv TEST_FILE=.../test.tsv bash ...
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MODEL=${MODEL:-bert-base-uncased}
TASK=${TASK:-squad}                      # squad | glue
GLUE_TASK=${GLUE_TASK:-sst2}             # hub glue task when TASK=glue and no TRAIN_FILE
TRAIN_FILE=${TRAIN_FILE:-}               # empty: the hub's squad / glue
PREDICT_FILE=${PREDICT_FILE:-}           # squad: evaluation JSON
VALIDATION_FILE=${VALIDATION_FILE:-}     # glue
TEST_FILE=${TEST_FILE:-}                 # glue
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/runs/bert_slim}
MAX_SEQ_LENGTH=${MAX_SEQ_LENGTH:-384}
DOC_STRIDE=${DOC_STRIDE:-128}
BATCH_SIZE=${BATCH_SIZE:-12}             # per device
GRAD_ACCUM=${GRAD_ACCUM:-1}              # global batch = BATCH_SIZE x NUM_PROCESSES x GRAD_ACCUM
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
EXTRA_ARGS=${EXTRA_ARGS:-}

source "$ROOT/Finetuning/scripts/launch.bash"
budget=(--num-train-epochs "$EPOCHS"); [[ -n $MAX_STEPS ]] && budget=(--max-steps "$MAX_STEPS")
data=(--task "$TASK")
if [[ $TASK == squad ]]; then
  [[ -n $TRAIN_FILE ]] && data+=(--train-file "$TRAIN_FILE" --predict-file "$PREDICT_FILE")
  data+=(--doc-stride "$DOC_STRIDE")
elif [[ -n $TRAIN_FILE ]]; then
  data+=(--train-file "$TRAIN_FILE")
  [[ -n $VALIDATION_FILE ]] && data+=(--validation-file "$VALIDATION_FILE")
  [[ -n $TEST_FILE ]] && data+=(--test-file "$TEST_FILE")
else
  data+=(--glue-task "$GLUE_TASK")
fi
launch "$ROOT/Finetuning/run_bert.py" \
  --model-name-or-path "$MODEL" "${data[@]}" --max-seq-length "$MAX_SEQ_LENGTH" --output-dir "$OUTPUT_DIR" \
  --self-slimming --inter-slimming --l1-self "$L1_SELF" --l1-inter "$L1_INTER" \
  --per-device-train-batch-size "$BATCH_SIZE" --per-device-eval-batch-size "$EVAL_BATCH_SIZE" \
  --gradient-accumulation-steps "$GRAD_ACCUM" "${budget[@]}" --learning-rate "$LEARNING_RATE" \
  --warmup-ratio "$WARMUP_RATIO" --save-every "$SAVE_EVERY" --checkpoint-every "$CHECKPOINT_EVERY" \
  --eval-every "$EVAL_EVERY" --seed "$SEED" $EXTRA_ARGS
