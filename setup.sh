#!/usr/bin/env bash
# Set up .venv with the pinned stack (requirements.txt), install `earlybird` (editable) and patch transformers.
#   bash setup.sh            install / update; running it again changes nothing
#   bash setup.sh --check    is the venv's transformers pristine, patched or something else? (exit 0 only if patched)
#   bash setup.sh --revert   restore the pristine transformers files
#   bash setup.sh --cuda     the same, with torch (the pinned version) from PyTorch's CUDA index instead of the
#                            machine's local CPU wheel: for a GPU machine. TORCH_INDEX picks the index (default
#                            https://download.pytorch.org/whl/cu130; e.g. .../cu128 for an older driver, or a mirror).
#                            Needs that index to be reachable; the tests and CI never take this path.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
PATCH_TOOL=(env EARLYBIRD_SKIP_PATCH_CHECK=1 "$PY" -m earlybird.transformers_patch)

need_venv() {
  if [[ ! -x "$PY" ]]; then
    echo "setup.sh: error: $VENV does not exist; run 'bash setup.sh' first." >&2
    exit 2
  fi
}

CUDA=0
case "${1:-}" in
  --check) need_venv; exec "${PATCH_TOOL[@]}" status ;;
  --revert) need_venv; exec "${PATCH_TOOL[@]}" revert ;;
  --cuda) CUDA=1 ;;
  "") ;;
  *) echo "setup.sh: error: unknown option '$1' (expected nothing, --check, --revert or --cuda)" >&2; exit 2 ;;
esac

if [[ ! -x "$PY" ]]; then
  echo "== creating $VENV with $(python3 --version)"
  python3 -m venv "$VENV"
fi

# pip leaves satisfied pins alone (a second run changes nothing) and puts back the pinned version
# of anything upgraded behind our back. torch goes first, alone: the machine's local CPU wheel, so that nothing
# pulls a CUDA build; with --cuda, the same version from the CUDA index (a build such as 2.13.0+cu130 satisfies the
# pin, so the requirements below and later runs of setup.sh keep it).
echo "== installing the pinned requirements"
TORCH_PIN=$(grep -E '^torch==' requirements.txt)
if (( CUDA )); then
  TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cu130}
  echo "== torch from $TORCH_INDEX (--cuda)"
  # --upgrade: a CPU build of the same version already satisfies the pin; the CUDA build (2.13.0+cu130) sorts after it
  "$PY" -m pip install --quiet --disable-pip-version-check --upgrade --index-url "$TORCH_INDEX" "$TORCH_PIN"
  if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.version.cuda else 1)'; then
    echo "setup.sh: error: --cuda: the torch installed from $TORCH_INDEX is not a CUDA build; expected an index of" \
      "CUDA wheels (TORCH_INDEX=https://download.pytorch.org/whl/cu<version>)" >&2
    exit 2
  fi
else
  "$PY" -m pip install --quiet --disable-pip-version-check "$TORCH_PIN"
fi
"$PY" -m pip install --quiet --disable-pip-version-check -r requirements.txt
stamp="$VENV/.earlybird-pyproject.sha256"
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ ! -x "$VENV/bin/earlybird" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  "$PY" -m pip install --quiet --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp"
fi

echo "== patching transformers"
"${PATCH_TOOL[@]}" apply
"${PATCH_TOOL[@]}" status
