#!/usr/bin/env bash
# The study, end to end, offline on a CPU: slimming run, detectors, tickets, EB-Train, report.md with figures.
#   bash reproduce.sh                 full run on scikit-learn's digits (minutes on 2 cores)
#   bash reproduce.sh --smoke         the same on a few dozen steps (well under a minute)
#   OUT=dir WORKERS=N SEED=S bash reproduce.sh
#   SEEDS="1 2 3" bash reproduce.sh   one study per seed in OUT/seed-S, and OUT/summary.md (mean ± sd over seeds)
#   bash reproduce.sh --force         recompute every run (a second pass otherwise reuses the runs that finished
#                                     with the same command and code, and redoes the rest)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if [[ ! -x .venv/bin/python ]]; then
  echo "reproduce.sh: error: .venv missing; run 'bash setup.sh' first" >&2
  exit 2
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m earlybird.reproduce --entry ViT_pretraining/main.py \
  --out "${OUT:-reproduce_out}" --workers "${WORKERS:-2}" --seed ${SEEDS:-${SEED:-42}} "$@" -- --dataset digits
