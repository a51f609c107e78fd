#!/usr/bin/env bash
# Prune the slimming run's BERT at a recorded step and retrain the ticket with the same budget (SQuAD by
# default; TASK=glue for sentence classification). REWIND=init: from the slimming run's step-0 weights
# (the lottery ticket); REWIND=none: from its weights at PRUNE_STEP (kept with SAVE_EVERY / --save-steps).
# RANDOM_SEED=<n>: the random-pruning baseline. Every variable can be set from the environment.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MODEL=${MODEL:-bert-base-uncased}        # for the tokenizer; the weights come from SLIM_DIR
TASK=${TASK:-squad}
GLUE_TASK=${GLUE_TASK:-sst2}
TRAIN_FILE=${TRAIN_FILE:-}
PREDICT_FILE=${PREDICT_FILE:-}
VALIDATION_FILE=${VALIDATION_FILE:-}
TEST_FILE=${TEST_FILE:-}
SLIM_DIR=${SLIM_DIR:-$ROOT/runs/bert_slim}
RECORDS=${RECORDS:-$SLIM_DIR/records}
PLAN=${PLAN:-}
PRUNE_STEP=${PRUNE_STEP:-2955}           # ~20% of a 2-epoch SQuAD run at batch 12
SELF_RATIO=${SELF_RATIO:-0.3}
INTER_RATIO=${INTER_RATIO:-0.3}
SELF_METHOD=${SELF_METHOD:-layerwise}
INTER_METHOD=${INTER_METHOD:-layerwise}
REWIND=${REWIND:-init}
RANDOM_SEED=${RANDOM_SEED:-}
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/runs/bert_ticket_step${PRUNE_STEP}_s${SELF_RATIO}_i${INTER_RATIO}_${REWIND}${RANDOM_SEED:+_random$RANDOM_SEED}}
MAX_SEQ_LENGTH=${MAX_SEQ_LENGTH:-384}
DOC_STRIDE=${DOC_STRIDE:-128}
BATCH_SIZE=${BATCH_SIZE:-12}
GRAD_ACCUM=${GRAD_ACCUM:-1}
EVAL_BATCH_SIZE=${EVAL_BATCH_SIZE:-64}
EPOCHS=${EPOCHS:-2}
MAX_STEPS=${MAX_STEPS:-}
LEARNING_RATE=${LEARNING_RATE:-3e-5}
WARMUP_RATIO=${WARMUP_RATIO:-0.0}
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
if [[ -n $PLAN ]]; then
  prune=(--prune-plan "$PLAN")
else
  prune=(--records "$RECORDS" --prune-step "$PRUNE_STEP" --self-pruning-ratio "$SELF_RATIO"
         --inter-pruning-ratio "$INTER_RATIO" --self-pruning-method "$SELF_METHOD" --inter-pruning-method "$INTER_METHOD")
  [[ -n $RANDOM_SEED ]] && prune+=(--random-prune "$RANDOM_SEED")
fi
launch "$ROOT/Finetuning/run_bert.py" \
  --model-name-or-path "$MODEL" "${data[@]}" --max-seq-length "$MAX_SEQ_LENGTH" --output-dir "$OUTPUT_DIR" \
  "${prune[@]}" --rewind "$REWIND" \
  --per-device-train-batch-size "$BATCH_SIZE" --per-device-eval-batch-size "$EVAL_BATCH_SIZE" \
  --gradient-accumulation-steps "$GRAD_ACCUM" "${budget[@]}" --learning-rate "$LEARNING_RATE" \
  --warmup-ratio "$WARMUP_RATIO" --checkpoint-every "$CHECKPOINT_EVERY" --eval-every "$EVAL_EVERY" \
  --seed "$SEED" $EXTRA_ARGS
