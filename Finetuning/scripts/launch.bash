# Sourced by the run scripts. Each script sets its study-scale defaults, then builds its command in the array FLAGS
# with the functions below and runs it with `launch SCRIPT "${FLAGS[@]}"` under `accelerate launch`, so the same
# command runs on one CPU, one GPU or several. Environment (all optional):
#   NUM_PROCESSES    processes (default 1); the global batch is per-device batch x processes x accumulation
#   MIXED_PRECISION  no | fp16 | bf16 (default no)
#   ACCELERATE       the accelerate executable (default: the project's .venv, else the one on PATH)
#   ACCELERATE_ARGS  extra `accelerate launch` arguments (e.g. "--main_process_port 29501")
#   EXTRA_ARGS       anything else for the entry point, e.g. "--resume" or "--max-train-samples 1000"
#   DRY_RUN=1        print the command instead of running it
FLAGS=()

# `VAR:--flag ...`: the flag with the variable's value, for each variable that is set and not empty.
flags_from_env() {
  local pair var
  for pair in "$@"; do
    var=${pair%%:*}
    if [[ -n ${!var:-} ]]; then FLAGS+=("${pair#*:}" "${!var}"); fi
  done
}

# The run, budget, optimisation, logging and checkpoint flags every script shares (--max-steps overrides the epochs;
# REPORT_TO=tensorboard|wandb|all adds experiment trackers).
run_flags() {
  flags_from_env OUTPUT_DIR:--output-dir BATCH_SIZE:--per-device-train-batch-size \
    EVAL_BATCH_SIZE:--per-device-eval-batch-size GRAD_ACCUM:--gradient-accumulation-steps EPOCHS:--num-train-epochs \
    MAX_STEPS:--max-steps LEARNING_RATE:--learning-rate WEIGHT_DECAY:--weight-decay WARMUP_RATIO:--warmup-ratio \
    SAVE_EVERY:--save-every CHECKPOINT_EVERY:--checkpoint-every CHECKPOINT_MINUTES:--checkpoint-minutes \
    EVAL_EVERY:--eval-every SEED:--seed WORKERS:--dataloader-num-workers REPORT_TO:--report-to
}

# Network slimming of both blocks, with the L1 strengths L1_SELF / L1_INTER.
slim_flags() {
  FLAGS+=(--self-slimming --inter-slimming --l1-self "$L1_SELF" --l1-inter "$L1_INTER")
}

# A ticket's defaults (call before using them, e.g. in OUTPUT_DIR): SELF_RATIO / INTER_RATIO (0.3), SELF_SCOPE /
# INTER_SCOPE (layerwise; SELF_METHOD / INTER_METHOD are the older names), REWIND (init), RECORDS (SLIM_DIR/records).
ticket_defaults() {
  SELF_RATIO=${SELF_RATIO:-0.3}
  INTER_RATIO=${INTER_RATIO:-0.3}
  SELF_SCOPE=${SELF_SCOPE:-${SELF_METHOD:-layerwise}}
  INTER_SCOPE=${INTER_SCOPE:-${INTER_METHOD:-layerwise}}
  REWIND=${REWIND:-init}
  RECORDS=${RECORDS:-$SLIM_DIR/records}
  PLAN=${PLAN:-}                  # a plan JSON instead of RECORDS / PRUNE_STEP / ratios
  RANDOM_SEED=${RANDOM_SEED:-}    # set for the random-pruning baseline
}

# The ticket: PLAN, or RECORDS at PRUNE_STEP with the ratios and scopes (RANDOM_SEED: the random baseline); REWIND.
ticket_flags() {
  if [[ -n $PLAN ]]; then
    FLAGS+=(--prune-plan "$PLAN")
  else
    FLAGS+=(--records "$RECORDS" --prune-step "$PRUNE_STEP" --self-pruning-ratio "$SELF_RATIO"
            --inter-pruning-ratio "$INTER_RATIO" --self-pruning-scope "$SELF_SCOPE" --inter-pruning-scope "$INTER_SCOPE")
    flags_from_env RANDOM_SEED:--random-prune
  fi
  FLAGS+=(--rewind "$REWIND")
}

# BERT's data: TASK=squad (hub, or TRAIN_FILE + PREDICT_FILE) or glue (hub GLUE_TASK, or TRAIN_FILE [+ VALIDATION_FILE,
# TEST_FILE]); MAX_SEQ_LENGTH, DOC_STRIDE (squad).
bert_data_flags() {
  TASK=${TASK:-squad}
  FLAGS+=(--task "$TASK")
  if [[ $TASK == squad ]]; then
    flags_from_env TRAIN_FILE:--train-file PREDICT_FILE:--predict-file DOC_STRIDE:--doc-stride
  elif [[ -n ${TRAIN_FILE:-} ]]; then
    flags_from_env TRAIN_FILE:--train-file VALIDATION_FILE:--validation-file TEST_FILE:--test-file
  else
    FLAGS+=(--glue-task "${GLUE_TASK:-sst2}")
  fi
  flags_from_env MAX_SEQ_LENGTH:--max-seq-length
}

launch() {
  local script=$1
  shift
  local accelerate=${ACCELERATE:-}
  if [[ -z $accelerate ]]; then
    if [[ -x "$ROOT/.venv/bin/accelerate" ]]; then accelerate="$ROOT/.venv/bin/accelerate"; else accelerate=accelerate; fi
  fi
  local python=${PYTHON:-$(dirname "$(command -v "$accelerate")")/python}
  local n=${NUM_PROCESSES:-1}
  local mode=()
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 \
      || "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    if (( n > 1 )); then mode=(--multi_gpu); fi
  elif (( n > 1 )); then
    # No GPU, several processes: accelerate 1.15 starts a single process for `--cpu --num_processes N`,
    # so start N through torchrun (--multi_gpu) and keep them on the CPU (gloo).
    export ACCELERATE_USE_CPU=1
    mode=(--multi_gpu)
  else
    mode=(--cpu)
  fi
  local extra=()
  read -r -a extra <<<"${EXTRA_ARGS:-}"
  local cmd=("$accelerate" launch "${mode[@]}" --num_processes "$n" --num_machines 1
             --mixed_precision "${MIXED_PRECISION:-no}" --dynamo_backend no ${ACCELERATE_ARGS:-}
             "$script" --mixed-precision "${MIXED_PRECISION:-no}" "$@" "${extra[@]}")
  echo "+ ${cmd[*]}" >&2
  if [[ ${DRY_RUN:-0} == 1 ]]; then return 0; fi
  "${cmd[@]}"
}
