#!/usr/bin/env bash
# Prune the slimming run's small ViT at a recorded step and retrain the ticket with the same budget.
# REWIND=init: from the slimming run's step-0 weights (the lottery ticket); REWIND=none: from its weights at
# PRUNE_STEP (kept with SAVE_EVERY). RANDOM_SEED=<n>: the random baseline. Variables can be set from the
# environment; DATASET and the budget must match the slimming run's.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
DATASET=${DATASET:-cifar10}
SLIM_DIR=${SLIM_DIR:-$ROOT/runs/vit_pretrain_slim}
RECORDS=${RECORDS:-$SLIM_DIR/records}
PLAN=${PLAN:-}
PRUNE_STEP=${PRUNE_STEP:-15600}          # 20% of 200 epochs x 390 steps
SELF_RATIO=${SELF_RATIO:-0.3}
INTER_RATIO=${INTER_RATIO:-0.3}
SELF_METHOD=${SELF_METHOD:-layerwise}
INTER_METHOD=${INTER_METHOD:-layerwise}
REWIND=${REWIND:-init}
RANDOM_SEED=${RANDOM_SEED:-}
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/runs/vit_pretrain_ticket_step${PRUNE_STEP}_s${SELF_RATIO}_i${INTER_RATIO}_${REWIND}${RANDOM_SEED:+_random$RANDOM_SEED}}
BATCH_SIZE=${BATCH_SIZE:-}
GRAD_ACCUM=${GRAD_ACCUM:-1}
EPOCHS=${EPOCHS:-}
MAX_STEPS=${MAX_STEPS:-}
LEARNING_RATE=${LEARNING_RATE:-}
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-2000}
EVAL_EVERY=${EVAL_EVERY:-0}
SEED=${SEED:-42}
WORKERS=${WORKERS:-4}
EXTRA_ARGS=${EXTRA_ARGS:-}

source "$ROOT/Finetuning/scripts/launch.bash"
opts=()
[[ -n $BATCH_SIZE ]] && opts+=(--per-device-train-batch-size "$BATCH_SIZE")
[[ -n $EPOCHS ]] && opts+=(--num-train-epochs "$EPOCHS")
[[ -n $MAX_STEPS ]] && opts+=(--max-steps "$MAX_STEPS")
[[ -n $LEARNING_RATE ]] && opts+=(--learning-rate "$LEARNING_RATE")
if [[ -n $PLAN ]]; then
  prune=(--prune-plan "$PLAN")
else
  prune=(--records "$RECORDS" --prune-step "$PRUNE_STEP" --self-pruning-ratio "$SELF_RATIO"
         --inter-pruning-ratio "$INTER_RATIO" --self-pruning-method "$SELF_METHOD" --inter-pruning-method "$INTER_METHOD")
  [[ -n $RANDOM_SEED ]] && prune+=(--random-prune "$RANDOM_SEED")
fi
launch "$ROOT/ViT_pretraining/main.py" \
  --dataset "$DATASET" --output-dir "$OUTPUT_DIR" "${prune[@]}" --rewind "$REWIND" \
  --gradient-accumulation-steps "$GRAD_ACCUM" --checkpoint-every "$CHECKPOINT_EVERY" --eval-every "$EVAL_EVERY" \
  --seed "$SEED" --dataloader-num-workers "$WORKERS" "${opts[@]}" $EXTRA_ARGS
