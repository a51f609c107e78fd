"""Experiment trackers beside metrics.jsonl: accelerate's TensorBoard and W&B trackers, on the main process only.

    --report-to none | tensorboard | wandb | all        (files under <output-dir>/tracking/<run name>/)

What the trackers get, each value at its own training step:

* every number of every metrics.jsonl line, named `<type>[/<split>]/<key>`: `train/loss` (the task loss),
  `train/l1_penalty` (the L1 term added to it), `train/learning_rate`, `train/epoch`, `eval/validation/accuracy`,
  `draw/pruned_heads` (EB-Train), `final/test/accuracy`, ...;
* per recorded step and block (slimming runs): `coefficients/<block>/{mean,min,max,below_0.01}` (the fraction of
  coefficients whose magnitude is below 0.01), and for the masks the run watches (`TrainConfig.mask_settings`:
  EB-Train's ratio and scope for the detector's blocks, else the block's pruning ratio and scope, 0.3 when it has none)
  `masks/<block>/hamming` (the fraction of entries that differ from the previous recorded step's mask) and
  `masks/<block>/nuclear_norm`.

The per-recorded-step values cost no host synchronisation: they are computed, vectorised over a chunk, from the rows
the CoefficientRecorder moves to the host anyway when it flushes (its listener), with the one mask function
(`earlybird.masks.compute_mask`), and logged with their own step numbers.
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import EarlyBirdError
from ..masks import compute_mask, hamming_distance, nuclear_norm

REPORT_TO = ("none", "tensorboard", "wandb", "all")
SMALL_COEFFICIENT = 0.01  # coefficients of smaller magnitude count as "below" in the summaries
# W&B refuses a step lower than one already logged, and the recorded steps arrive a chunk late: W&B gets our step as
# this metric (its x axis, as transformers' own W&B callback does) instead of its `step` argument.
WANDB_STEP = "train/global_step"


def installed_trackers() -> tuple:
    """The trackers --report-to all would use: those whose package is installed."""
    from accelerate.utils import is_tensorboard_available, is_wandb_available

    return tuple(name for name, ok in (("tensorboard", is_tensorboard_available()), ("wandb", is_wandb_available()))
                 if ok)


def tracker_names(report_to: str) -> tuple:
    """accelerate's tracker names for --report-to; EarlyBirdError when one asked for is not installed."""
    if report_to not in REPORT_TO:
        raise EarlyBirdError(f"--report-to must be one of {', '.join(REPORT_TO)}, got {report_to!r}")
    if report_to == "none":
        return ()
    installed = installed_trackers()
    if report_to == "all":
        if not installed:
            raise EarlyBirdError("--report-to all: neither tensorboard nor wandb is installed (bash setup.sh installs "
                                 "tensorboard)")
        return installed
    if report_to not in installed:
        raise EarlyBirdError(f"--report-to {report_to}: the {report_to} package is not installed "
                             f"(pip install {report_to})")
    return (report_to,)


def line_values(entry: dict) -> dict:
    """A metrics.jsonl line's numbers, named `<type>[/<split>]/<key>` (its step is the tracker's step)."""
    prefix = entry["type"] + (f"/{entry['split']}" if "split" in entry else "")
    return {f"{prefix}/{key}": value for key, value in entry.items()
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool)}


def _hparams(flags: dict) -> dict:
    """The run's flags as tracker hyper-parameters (numbers, strings, booleans; lists as JSON)."""
    return {key: value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)
            for key, value in flags.items()}


class Tracking:
    """The run's trackers (`Accelerator(log_with=...)`); every method is a no-op on the other processes and without
    --report-to."""

    def __init__(self, accelerator, names: tuple):
        self.accelerator = accelerator
        self.active = bool(names) and accelerator.is_main_process

    def start(self, layout, flags: dict, resume_step: int | None = None) -> None:
        """init_trackers, named after the run directory. A resumed run's TensorBoard writer purges what the killed run
        logged after the checkpoint (`purge_step`): it is logged again, as metrics.jsonl's lines are."""
        if not self.active:
            return
        name = layout.path.resolve().name
        layout.tracking.mkdir(parents=True, exist_ok=True)
        init = {"wandb": {"name": name, "dir": str(layout.tracking)}}
        if resume_step is not None:
            init["tensorboard"] = {"purge_step": resume_step + 1}
        self.accelerator.init_trackers(name, config=_hparams(flags), init_kwargs=init)
        for tracker in self.accelerator.trackers:
            if tracker.name == "wandb":
                tracker.run.define_metric(WANDB_STEP)
                tracker.run.define_metric("*", step_metric=WANDB_STEP, step_sync=True)

    def log(self, values: dict, step: int) -> None:
        if not self.active or not values:
            return
        for tracker in self.accelerator.trackers:  # what accelerator.log does, but W&B takes the step as a metric
            if tracker.name == "wandb":
                tracker.log({**values, WANDB_STEP: step})
            else:
                tracker.log(values, step=step)

    def log_line(self, entry: dict) -> None:
        """A metrics.jsonl line (earlybird.training.rundir.RunDir.append_metrics) to the trackers."""
        if self.active:
            self.log(line_values(entry), entry["step"])

    def finish(self) -> None:
        """Close the trackers (accelerator.end_training would also tear down the process group, the launcher's job)."""
        if self.active:
            for tracker in self.accelerator.trackers:
                tracker.finish()
            self.active = False


class CoefficientSummaries:
    """The recorder's listener (`CoefficientRecorder(listener=...)`): per recorded step and block, the coefficients'
    mean / min / max / fraction below SMALL_COEFFICIENT, and the Hamming distance of the watched mask to the previous
    recorded step's and its nuclear norm, computed per flushed chunk and handed to `log(values, step)`."""

    def __init__(self, log, masks: dict, structure: dict | None = None):
        self.log = log
        self.masks = dict(masks)  # block -> (ratio, scope)
        self.structure = dict(structure or {})  # block -> compute_mask's group_size / gqa_rule (GQA heads)
        self.previous: dict = {}  # block -> the mask of the last recorded step seen

    def __call__(self, steps, blocks: dict) -> None:
        columns = {}  # tag -> one value per step (NaN: none at that step)
        for block, coefs in blocks.items():
            coefs = np.asarray(coefs)
            magnitude = np.abs(coefs)
            columns.update({f"coefficients/{block}/mean": coefs.mean(axis=(1, 2)),
                            f"coefficients/{block}/min": coefs.min(axis=(1, 2)),
                            f"coefficients/{block}/max": coefs.max(axis=(1, 2)),
                            f"coefficients/{block}/below_{SMALL_COEFFICIENT:g}":
                                (magnitude < SMALL_COEFFICIENT).mean(axis=(1, 2))})
            masks = compute_mask(coefs, *self.masks[block], **self.structure.get(block, {}))
            hamming = np.full(len(masks), np.nan)  # the first recorded step has no previous mask
            hamming[1:] = hamming_distance(masks[1:], masks[:-1])
            if block in self.previous:
                hamming[0] = hamming_distance(masks[0], self.previous[block])
            self.previous[block] = masks[-1]
            columns[f"masks/{block}/hamming"] = hamming
            columns[f"masks/{block}/nuclear_norm"] = nuclear_norm(masks)
        for i, step in enumerate(steps):
            self.log({tag: float(values[i]) for tag, values in columns.items() if not np.isnan(values[i])}, int(step))

    def replay(self, records, after_step: int) -> None:
        """On resume: take the last mask at or before `after_step` from the records as the previous one, and log the
        rows the killed run had already committed beyond it (the recorder keeps them and will not record them again)."""
        before = np.flatnonzero(records.steps <= after_step)
        beyond = np.flatnonzero(records.steps > after_step)
        for block in self.masks:
            coefs = getattr(records, block)
            if coefs is not None and len(before):
                ratio, scope = self.masks[block]
                self.previous[block] = compute_mask(np.asarray(coefs[before[-1]]), ratio, scope,
                                                    **self.structure.get(block, {}))
        if len(beyond):
            self(records.steps[beyond], {block: np.asarray(getattr(records, block)[beyond]) for block in self.masks
                                         if getattr(records, block) is not None})
