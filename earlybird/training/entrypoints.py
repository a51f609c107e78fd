"""The entry-point scripts, and importing one by its path to call its `main(argv)` in-process.

The scripts are thin (flags + a task builder + `earlybird.training.runner.run`); importing one once and calling its
`main` many times is what the study pipeline's worker pool, the tests and the benchmarks do instead of paying a new
interpreter's start-up per run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the source checkout the scripts live in
ENTRY_POINTS = {
    "vit": "Finetuning/run_vit.py",
    "bert": "Finetuning/run_bert.py",
    "clm": "Finetuning/run_clm.py",
    "pretrain": "ViT_pretraining/main.py",
}


def load_entry_point(path, name: str | None = None):
    """Import the script at `path` (absolute, or relative to the checkout) as module `name` (cached in sys.modules)."""
    path = Path(path)
    if not path.is_absolute() and not path.exists():
        path = ROOT / path
    name = name or f"earlybird_entry_{path.stem}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module
