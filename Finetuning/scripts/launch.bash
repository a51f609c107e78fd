# Sourced by the run scripts: `launch SCRIPT ARGS...` runs SCRIPT under `accelerate launch`, so the same
# command runs on one CPU, one GPU or several. Environment (all optional):
#   NUM_PROCESSES    processes (default 1); the global batch is per-device batch x processes x accumulation
#   MIXED_PRECISION  no | fp16 | bf16 (default no)
#   ACCELERATE       the accelerate executable (default: the project's .venv, else the one on PATH)
#   ACCELERATE_ARGS  extra `accelerate launch` arguments (e.g. "--main_process_port 29501")
#   DRY_RUN=1        print the command instead of running it

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
  local cmd=("$accelerate" launch "${mode[@]}" --num_processes "$n" --num_machines 1
             --mixed_precision "${MIXED_PRECISION:-no}" --dynamo_backend no ${ACCELERATE_ARGS:-}
             "$script" --mixed-precision "${MIXED_PRECISION:-no}" "$@")
  echo "+ ${cmd[*]}" >&2
  if [[ ${DRY_RUN:-0} == 1 ]]; then return 0; fi
  "${cmd[@]}"
}
