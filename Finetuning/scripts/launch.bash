# Sourced by the run scripts. Each script sets its study-scale defaults, then builds its command in the array FLAGS
# with the functions below and runs it with `launch SCRIPT "${FLAGS[@]}"` under `accelerate launch`, so the same
# command runs on one CPU, one GPU, several, or several machines. Environment (all optional; docs/training.md):
#   DEVICE           auto (default): the GPUs when torch can use them; a GPU that `nvidia-smi -L` lists but torch
#                    cannot use (a CPU build of torch) stops the script with exit 2 (`bash setup.sh --cuda` installs
#                    a CUDA build); cpu: the CPU whatever is there; cuda: the GPUs, or exit 2
#   NUM_PROCESSES    processes in total, over every machine (accelerate's --num_processes; default 1)
#   GLOBAL_BATCH     examples per optimizer step over every process: each process takes
#                    GLOBAL_BATCH / (NUM_PROCESSES x GRAD_ACCUM) (refused when that does not divide), so the number of
#                    processes changes neither the batch nor the number of steps
#   GRAD_ACCUM       gradient accumulation steps (default 1)
#   NUM_MACHINES     machines (default 1); with more, each runs the same command with its own MACHINE_RANK (0 on the
#                    main one) and MAIN_PROCESS_IP (the main machine's address); OUTPUT_DIR on a filesystem they share
#   MAIN_PROCESS_PORT the main process's port (accelerate's default 29500; set it for two runs on one machine)
#   MIXED_PRECISION  no | fp16 | bf16 (default no)
#   ACCELERATE       the accelerate executable (default: the project's .venv, else the one on PATH)
#   PYTHON           the python whose torch is checked for CUDA (default: the one beside ACCELERATE)
#   ACCELERATE_ARGS  extra `accelerate launch` arguments
#   EXTRA_ARGS       anything else for the entry point, e.g. "--resume" or "--max-train-samples 1000"
#   DRY_RUN=1        print the command instead of running it
FLAGS=()

# One line naming the script and what was expected, exit 2, nothing started.
die() {
  echo "$(basename "$0"): error: $*" >&2
  exit 2
}

# `positive_int NAME`: the variable's value must be a positive integer.
positive_int() {
  [[ ${!1} =~ ^[1-9][0-9]*$ ]] || die "$1=${!1}: expected a positive integer"
}

# `VAR:--flag ...`: the flag with the variable's value, for each variable that is set and not empty.
flags_from_env() {
  local pair var
  for pair in "$@"; do
    var=${pair%%:*}
    if [[ -n ${!var:-} ]]; then FLAGS+=("${pair#*:}" "${!var}"); fi
  done
}

accelerate_exe() {
  if [[ -n ${ACCELERATE:-} ]]; then echo "$ACCELERATE"
  elif [[ -x "$ROOT/.venv/bin/accelerate" ]]; then echo "$ROOT/.venv/bin/accelerate"
  else echo accelerate; fi
}

# PYTHON, else the python beside the accelerate executable, else the project's .venv's, else python3.
python_exe() {
  local beside
  beside=$(dirname "$(type -P "$(accelerate_exe)" || echo .)")/python
  if [[ -n ${PYTHON:-} ]]; then echo "$PYTHON"
  elif [[ -x $beside ]]; then echo "$beside"
  elif [[ -x "$ROOT/.venv/bin/python" ]]; then echo "$ROOT/.venv/bin/python"
  else echo python3; fi
}

# NUM_PROCESSES, NUM_MACHINES, GRAD_ACCUM: their defaults (1), checked.
process_counts() {
  NUM_PROCESSES=${NUM_PROCESSES:-1} NUM_MACHINES=${NUM_MACHINES:-1} GRAD_ACCUM=${GRAD_ACCUM:-1}
  positive_int NUM_PROCESSES
  positive_int NUM_MACHINES
  positive_int GRAD_ACCUM
}

# ViT_pretraining's scripts: an empty GLOBAL_BATCH is the data set's preset batch (main.py's, meant for one process),
# looked up only when several processes or accumulation steps share it.
preset_global_batch() {
  process_counts
  if [[ -z ${GLOBAL_BATCH:-} ]] && (( NUM_PROCESSES * GRAD_ACCUM > 1 )); then
    GLOBAL_BATCH=$("$(python_exe)" -m earlybird.training.scriptvars --prog "$(basename "$0")" preset-batch "$1") \
      || exit 2
  fi
}

# The per-device batch: GLOBAL_BATCH over NUM_PROCESSES x GRAD_ACCUM (empty GLOBAL_BATCH: the entry point's default,
# for one process without accumulation only).
batch_flags() {
  [[ -z ${BATCH_SIZE:-} ]] || die "BATCH_SIZE=$BATCH_SIZE: the scripts take GLOBAL_BATCH (examples per optimizer step" \
    "over every process; the per-device batch is derived from it, NUM_PROCESSES and GRAD_ACCUM); expected GLOBAL_BATCH"
  process_counts
  local n=$NUM_PROCESSES accum=$GRAD_ACCUM
  FLAGS+=(--gradient-accumulation-steps "$accum")
  if [[ -z ${GLOBAL_BATCH:-} ]]; then
    (( n * accum == 1 )) || die "GLOBAL_BATCH is empty: with NUM_PROCESSES=$n and GRAD_ACCUM=$accum the entry" \
      "point's per-device default would change the global batch; expected GLOBAL_BATCH"
    return 0
  fi
  positive_int GLOBAL_BATCH
  (( GLOBAL_BATCH % (n * accum) == 0 )) || die "GLOBAL_BATCH=$GLOBAL_BATCH does not divide into NUM_PROCESSES=$n x" \
    "GRAD_ACCUM=$accum per-device batches; expected a multiple of $((n * accum))"
  FLAGS+=(--per-device-train-batch-size "$((GLOBAL_BATCH / (n * accum)))")
}

# The run, budget, optimisation, logging and checkpoint flags every script shares (--max-steps overrides the epochs;
# REPORT_TO=tensorboard|wandb|all adds experiment trackers).
run_flags() {
  batch_flags
  flags_from_env OUTPUT_DIR:--output-dir EVAL_BATCH_SIZE:--per-device-eval-batch-size EPOCHS:--num-train-epochs \
    MAX_STEPS:--max-steps LEARNING_RATE:--learning-rate WEIGHT_DECAY:--weight-decay WARMUP_RATIO:--warmup-ratio \
    SAVE_EVERY:--save-every CHECKPOINT_EVERY:--checkpoint-every CHECKPOINT_MINUTES:--checkpoint-minutes \
    EVAL_EVERY:--eval-every SEED:--seed WORKERS:--dataloader-num-workers REPORT_TO:--report-to
}

# Network slimming of both blocks, with the L1 strengths L1_SELF / L1_INTER. EB_METHOD=hamming|slope|mk|adf adds
# EB-Train with the study's detector parameters scaled to this run's length (--eb-scale) and the ratios SELF_RATIO /
# INTER_RATIO (0.3).
slim_flags() {
  FLAGS+=(--self-slimming --inter-slimming --l1-self "$L1_SELF" --l1-inter "$L1_INTER")
  if [[ -n ${EB_METHOD:-} ]]; then
    FLAGS+=(--eb-method "$EB_METHOD" --eb-scale --self-pruning-ratio "${SELF_RATIO:-0.3}"
            --inter-pruning-ratio "${INTER_RATIO:-0.3}")
  fi
}

# A ticket's defaults (call before using them, e.g. in OUTPUT_DIR): SELF_RATIO / INTER_RATIO (0.3), SELF_SCOPE /
# INTER_SCOPE (layerwise; SELF_METHOD / INTER_METHOD are the older names), REWIND (init), RECORDS (SLIM_DIR/records),
# PRUNE_STEP (empty: the recorded step at PRUNE_FRACTION, default 0.2, of the slimming run's own length).
ticket_defaults() {
  SELF_RATIO=${SELF_RATIO:-0.3}
  INTER_RATIO=${INTER_RATIO:-0.3}
  SELF_SCOPE=${SELF_SCOPE:-${SELF_METHOD:-layerwise}}
  INTER_SCOPE=${INTER_SCOPE:-${INTER_METHOD:-layerwise}}
  REWIND=${REWIND:-init}
  RECORDS=${RECORDS:-$SLIM_DIR/records}
  PLAN=${PLAN:-}                  # a plan JSON instead of RECORDS / PRUNE_STEP / ratios
  RANDOM_SEED=${RANDOM_SEED:-}    # set for the random-pruning baseline
  PRUNE_FRACTION=${PRUNE_FRACTION:-0.2}
  if [[ -z ${PRUNE_STEP:-} && -z $PLAN ]]; then
    PRUNE_STEP=$("$(python_exe)" -m earlybird.training.scriptvars --prog "$(basename "$0")" prune-step "$RECORDS" \
      "$PRUNE_FRACTION") || exit 2
  fi
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

# cpu or cuda, from DEVICE (see the top). The GPUs torch can use are asked of torch itself: `nvidia-smi` alone says
# nothing about the installed torch, and a CPU build on a GPU machine would train on the CPU without a word.
choose_device() {
  local device=${DEVICE:-auto} per_machine=$1
  [[ $device == auto || $device == cpu || $device == cuda ]] || die "DEVICE=$device: expected auto, cpu or cuda"
  if [[ $device == cpu ]]; then DEVICE=cpu; return 0; fi
  local python listed=0 probe version="(no torch)" usable=0
  python=$(python_exe)
  if command -v nvidia-smi >/dev/null 2>&1; then listed=$(nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true); fi
  local ask='import torch; print(torch.__version__, torch.cuda.device_count() if torch.cuda.is_available() else 0)'
  if probe=$("$python" -c "$ask" 2>/dev/null); then
    read -r version usable <<<"$probe"
  fi
  if (( usable > 0 )); then
    (( per_machine <= usable )) || die "$per_machine processes per machine (NUM_PROCESSES=${NUM_PROCESSES:-1} over" \
      "NUM_MACHINES=${NUM_MACHINES:-1}) but torch sees $usable GPU(s) here; expected at most one process per GPU"
    DEVICE=cuda
  elif [[ $device == cuda ]]; then
    die "DEVICE=cuda but torch $version of $python cannot use CUDA; install a CUDA build with \`bash setup.sh --cuda\`"
  elif (( listed > 0 )); then
    die "nvidia-smi lists $listed GPU(s) but torch $version of $python cannot use them (a CPU build), so the run" \
      "would train on the CPU: install a CUDA build with \`bash setup.sh --cuda\`, or set DEVICE=cpu to train on the" \
      "CPU anyway"
  else
    DEVICE=cpu
  fi
}

launch() {
  local script=$1
  shift
  process_counts
  local n=$NUM_PROCESSES machines=$NUM_MACHINES
  (( n % machines == 0 )) || die "NUM_PROCESSES=$n (processes in total) is not a multiple of NUM_MACHINES=$machines;" \
    "expected the same number of processes on every machine"
  local machine=(--num_machines "$machines")
  if (( machines > 1 )); then
    [[ ${MACHINE_RANK:-} =~ ^[0-9]+$ ]] && (( MACHINE_RANK < machines )) \
      || die "MACHINE_RANK=${MACHINE_RANK:-}: expected this machine's rank, 0 (the main machine) to $((machines - 1))"
    [[ -n ${MAIN_PROCESS_IP:-} ]] || die "NUM_MACHINES=$machines needs MAIN_PROCESS_IP, the main machine's address"
    machine+=(--machine_rank "$MACHINE_RANK" --main_process_ip "$MAIN_PROCESS_IP")
  fi
  if [[ -n ${MAIN_PROCESS_PORT:-} ]]; then machine+=(--main_process_port "$MAIN_PROCESS_PORT"); fi
  choose_device $((n / machines))
  local mode=()
  if [[ $DEVICE == cpu ]]; then
    if (( n > 1 )); then
      # accelerate 1.15 starts a single process for `--cpu --num_processes N`, so start N through torchrun
      # (--multi_gpu) and keep them on the CPU (gloo).
      export ACCELERATE_USE_CPU=1
      mode=(--multi_gpu)
    else
      mode=(--cpu)
    fi
  elif (( n > 1 )); then
    mode=(--multi_gpu)
  fi
  local extra=()
  read -r -a extra <<<"${EXTRA_ARGS:-}"
  # shellcheck disable=SC2206
  local cmd=("$(accelerate_exe)" launch "${mode[@]}" --num_processes "$n" "${machine[@]}"
             --mixed_precision "${MIXED_PRECISION:-no}" --dynamo_backend no ${ACCELERATE_ARGS:-}
             "$script" --mixed-precision "${MIXED_PRECISION:-no}" "$@" "${extra[@]}")
  echo "+ ${ACCELERATE_USE_CPU:+ACCELERATE_USE_CPU=$ACCELERATE_USE_CPU }${cmd[*]}" >&2
  if [[ ${DRY_RUN:-0} == 1 ]]; then return 0; fi
  "${cmd[@]}"
}
