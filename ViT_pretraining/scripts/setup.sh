#!/usr/bin/env bash
# The project has one setup: the root setup.sh (venv with the pinned stack, earlybird, patched transformers).
# The small ViT is built from the patched ViTConfig, so nothing else is needed here.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
exec bash "$ROOT/setup.sh" "$@"
