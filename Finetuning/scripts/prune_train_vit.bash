#!/usr/bin/env bash
# Prune the slimming run's ViT at a recorded step and retrain the ticket with the same budget.
# REWIND=init starts from the slimming run's step-0 weights (the lottery ticket); REWIND=none from its
# weights at PRUNE_STEP (the slimming run must have kept them: SAVE_EVERY / --save-steps).
# RANDOM_SEED=<n> gives the random-pruning baseline. Every variable can be set from the environment, e.g.
#   SLIM_DIR=runs/vit_slim PRUNE_STEP=300 SELF_RATIO=0.3 INTER_RATIO=0.3 bash Finetuning/scripts/prune_train_vit.bash
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MODEL=${MODEL:-google/vit-base-patch16-224-in21k}   # for the image processor; the weights come from SLIM_DIR
DATASET=${DATASET:-imagenet-1k}
SLIM_DIR=${SLIM_DIR:-$ROOT/runs/vit_slim}
RECORDS=${RECORDS:-$SLIM_DIR/records}
PLAN=${PLAN:-}                           # a plan JSON instead of RECORDS/PRUNE_STEP/ratios
PRUNE_STEP=${PRUNE_STEP:-2955}           # ~20% of the study's 14774 steps
SELF_RATIO=${SELF_RATIO:-0.3}
INTER_RATIO=${INTER_RATIO:-0.3}
SELF_METHOD=${SELF_METHOD:-layerwise}    # layerwise | global
INTER_METHOD=${INTER_METHOD:-layerwise}
REWIND=${REWIND:-init}                   # init | none
RANDOM_SEED=${RANDOM_SEED:-}             # set for the random baseline
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/runs/vit_ticket_step${PRUNE_STEP}_s${SELF_RATIO}_i${INTER_RATIO}_${REWIND}${RANDOM_SEED:+_random$RANDOM_SEED}}
BATCH_SIZE=${BATCH_SIZE:-64}
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
WORKERS=${WORKERS:-8}
EXTRA_ARGS=${EXTRA_ARGS:-}

source "$ROOT/Finetuning/scripts/launch.bash"
budget=(--num-train-epochs "$EPOCHS"); [[ -n $MAX_STEPS ]] && budget=(--max-steps "$MAX_STEPS")
if [[ -n $PLAN ]]; then
  prune=(--prune-plan "$PLAN")
else
  prune=(--records "$RECORDS" --prune-step "$PRUNE_STEP" --self-pruning-ratio "$SELF_RATIO"
         --inter-pruning-ratio "$INTER_RATIO" --self-pruning-method "$SELF_METHOD" --inter-pruning-method "$INTER_METHOD")
  [[ -n $RANDOM_SEED ]] && prune+=(--random-prune "$RANDOM_SEED")
fi
launch "$ROOT/Finetuning/run_vit.py" \
  --model-name-or-path "$MODEL" --dataset "$DATASET" --output-dir "$OUTPUT_DIR" "${prune[@]}" --rewind "$REWIND" \
  --per-device-train-batch-size "$BATCH_SIZE" --per-device-eval-batch-size "$EVAL_BATCH_SIZE" \
  --gradient-accumulation-steps "$GRAD_ACCUM" "${budget[@]}" --learning-rate "$LEARNING_RATE" \
  --weight-decay "$WEIGHT_DECAY" --warmup-ratio "$WARMUP_RATIO" --checkpoint-every "$CHECKPOINT_EVERY" \
  --eval-every "$EVAL_EVERY" --seed "$SEED" --dataloader-num-workers "$WORKERS" $EXTRA_ARGS
