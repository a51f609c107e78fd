#!/usr/bin/env bash
# Fine-tune a decoder LLM (Llama, Qwen3) as a causal LM with network slimming on a text file and record the
# coefficients. Every variable below can be set from the environment (and those of launch.bash); see docs/training.md:
#   MODEL=/path/to/llama TRAIN_FILE=corpus.txt MAX_STEPS=200 bash Finetuning/scripts/slim_clm.bash
#   DATASET_NAME=/path/to/save_to_disk_dir TEXT_COLUMN=text bash Finetuning/scripts/slim_clm.bash
#   EB_METHOD=hamming SELF_RATIO=0.5 INTER_RATIO=0.5 bash ...: EB-Train (draw online with the study's detector
#   parameters scaled to the run, prune in place with SCOPE, GQA_RULE, ROUND_TO)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
MODEL=${MODEL:-meta-llama/Llama-3.2-1B}
OUTPUT_DIR=${OUTPUT_DIR:-$ROOT/runs/clm_slim}
TRAIN_FILE=${TRAIN_FILE:-}               # local text, one example per line (else DATASET_NAME)
VALIDATION_FILE=${VALIDATION_FILE:-}     # default: the last 10% of TRAIN_FILE's blocks
DATASET_NAME=${DATASET_NAME:-}
BLOCK_SIZE=${BLOCK_SIZE:-512}
GLOBAL_BATCH=${GLOBAL_BATCH:-8}          # per optimizer step, over every process
GRAD_ACCUM=${GRAD_ACCUM:-1}              # per device: GLOBAL_BATCH / (NUM_PROCESSES x GRAD_ACCUM)
EVAL_BATCH_SIZE=${EVAL_BATCH_SIZE:-8}
EPOCHS=${EPOCHS:-1}
MAX_STEPS=${MAX_STEPS:-}                 # set to override EPOCHS
LEARNING_RATE=${LEARNING_RATE:-2e-5}
WARMUP_RATIO=${WARMUP_RATIO:-0.0}
L1_SELF=${L1_SELF:-1e-4}
L1_INTER=${L1_INTER:-1e-4}
SAVE_EVERY=${SAVE_EVERY:-0}              # keep weights every N steps (needed for `--rewind none` tickets)
CHECKPOINT_EVERY=${CHECKPOINT_EVERY:-1000}
EVAL_EVERY=${EVAL_EVERY:-0}
SEED=${SEED:-42}
EB_METHOD=${EB_METHOD:-}                 # hamming | slope | mk | adf: EB-Train (SELF_RATIO / INTER_RATIO, 0.3)
SCOPE=${SCOPE:-uniform}                  # EB-Train: layerwise | global | uniform (uniform: a standard-config export)
GQA_RULE=${GQA_RULE:-per-group}          # per-group | groups (grouped-query attention)
ROUND_TO=${ROUND_TO:-1}                  # kept widths rounded up to a multiple

source "$ROOT/Finetuning/scripts/launch.bash"
FLAGS=(--model-name-or-path "$MODEL")
flags_from_env TRAIN_FILE:--train-file VALIDATION_FILE:--validation-file DATASET_NAME:--dataset-name \
  TEXT_COLUMN:--text-column BLOCK_SIZE:--block-size
slim_flags
run_flags
if [[ -n $EB_METHOD ]]; then
  FLAGS+=(--eb-block both --self-pruning-scope "$SCOPE" --inter-pruning-scope "$SCOPE" --gqa-rule "$GQA_RULE"
          --round-to "$ROUND_TO")
fi
launch "$ROOT/Finetuning/run_clm.py" "${FLAGS[@]}"
