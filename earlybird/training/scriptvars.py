"""Numbers the bash scripts (`Finetuning/scripts/launch.bash`) take from a run or a preset, computed here, once,
rather than in bash:

    python -m earlybird.training.scriptvars prune-step RECORDS FRACTION [--prog NAME]
        the recorded step at FRACTION of the slimming run's own length (its results.json), e.g. 0.2 -> 2955 of
        14774 steps, whatever the number of processes it ran on
    python -m earlybird.training.scriptvars preset-batch DATASET [--prog NAME]
        ViT_pretraining/main.py's preset batch for DATASET (the preset's global batch: one process)

Bad input is one line `<prog>: error: ...` on stderr, exit 2.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..errors import EarlyBirdError
from ..layout import RunLayout, read_json, records_path
from ..records import load_records


def run_length(records) -> int:
    """The optimizer steps of the run that wrote `records` (a run directory, its records/ or a .npy file): the
    step its results.json says it finished at."""
    path = records_path(records)
    run = RunLayout.of_records(path)
    results = read_json(run.results)
    if not isinstance(results, dict) or not isinstance(results.get("step"), int):
        raise EarlyBirdError(f"{run.results} not found or without its step: the slimming run has not finished, so its "
                             "length is unknown; expected a finished run, or the step itself (PRUNE_STEP)")
    return results["step"]


def prune_step(records, fraction) -> int:
    """The recorded step nearest `fraction` of the run's length (the earlier of two as near; at least the first)."""
    try:
        value = float(fraction)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise EarlyBirdError(f"PRUNE_FRACTION={fraction}: expected a fraction of training in [0, 1]")
    total = run_length(records)
    steps = load_records(records_path(records)).steps
    if steps.size == 0:
        raise EarlyBirdError(f"{records_path(records)} holds no recorded step")
    target = value * total
    return int(steps[int(np.argmin(np.abs(steps - target)))])


def preset_batch(dataset: str) -> int:
    from .tasks import PRETRAIN_PRESETS  # torch and the data modules: only for this question

    return PRETRAIN_PRESETS["digits" if dataset == "digits" else "cifar"]["per_device_train_batch_size"]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="scriptvars", description=__doc__.split("\n\n")[0])
    parser.add_argument("--prog", default="scriptvars", help="the script name to start an error line with")
    sub = parser.add_subparsers(dest="question", required=True)
    p = sub.add_parser("prune-step")
    p.add_argument("records")
    p.add_argument("fraction")
    p = sub.add_parser("preset-batch")
    p.add_argument("dataset")
    args = parser.parse_args(argv)
    try:
        print(prune_step(args.records, args.fraction) if args.question == "prune-step" else preset_batch(args.dataset))
    except EarlyBirdError as err:
        print(f"{args.prog}: error: " + " ".join(str(err).split()), file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
