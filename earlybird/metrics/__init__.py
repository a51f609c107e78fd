"""Local `evaluate` metrics, loaded by path so they work offline.

`evaluate.load("accuracy")` and `evaluate.load("squad")` download their scripts from the Hub; the
scripts here are our own `evaluate.Metric` subclasses with the same names and outputs.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import EarlyBirdError

METRICS_DIR = Path(__file__).resolve().parent
NAMES = ("accuracy", "squad")


def metric_path(name: str) -> Path:
    if name not in NAMES:
        raise EarlyBirdError(f"unknown metric {name!r}; the local metrics are {', '.join(NAMES)}")
    return METRICS_DIR / name / f"{name}.py"


_LOADED: dict = {}


def load_metric(name: str, **kwargs):
    """`evaluate.load` of a local metric script (`accuracy` or `squad`); never touches the network.

    Loaded once per process and reused (a metric's `compute` starts afresh each time).
    """
    import evaluate

    key = (name, tuple(sorted(kwargs.items())))
    if key not in _LOADED:
        _LOADED[key] = evaluate.load(str(metric_path(name)), **kwargs)
    return _LOADED[key]
