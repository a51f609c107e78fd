#!/usr/bin/env bash
# Set up .venv with the pinned stack (requirements.txt), install `earlybird` (editable) and patch transformers.
#   bash setup.sh            install / update; running it again changes nothing
#   bash setup.sh --check    is the venv's transformers pristine, patched or something else? (exit 0 only if patched)
#   bash setup.sh --revert   restore the pristine transformers files
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

case "${1:-}" in
  --check) need_venv; exec "${PATCH_TOOL[@]}" status ;;
  --revert) need_venv; exec "${PATCH_TOOL[@]}" revert ;;
  "") ;;
  *) echo "setup.sh: error: unknown option '$1' (expected nothing, --check or --revert)" >&2; exit 2 ;;
esac

if [[ ! -x "$PY" ]]; then
  echo "== creating $VENV with $(python3 --version)"
  python3 -m venv "$VENV"
fi

# pip leaves satisfied pins alone (a second run changes nothing) and puts back the pinned version
# of anything upgraded behind our back. torch goes first, alone: the machine's local CPU wheel,
# so that nothing pulls a CUDA build.
echo "== installing the pinned requirements"
"$PY" -m pip install --quiet --disable-pip-version-check "$(grep -E '^torch==' requirements.txt)"
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
