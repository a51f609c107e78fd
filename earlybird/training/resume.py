"""What `--resume` continues: a run with steps left to do, under the flags it was started with.

A resumed run restores its checkpoint's model, optimizer, learning-rate schedule, RNG states and position in the data.
A flag that decided any of those, or what the run trains on, must keep the run's value: another --max-steps would
leave the restored schedule running past its end (a cosine climbs back to the peak learning rate), another
--learning-rate would be overwritten by the optimizer's restored state, another --seed would change the data order
mid-run, other slimming / ticket / EB-Train flags would silently train a different run. So every flag is compared with
the run's args.json, except those in RESUME_MAY_CHANGE (how the run is watched, saved and evaluated, and the global
batch, which `loop.check_resumable` compares with the checkpoint, processes included); a difference is refused with
one line naming each flag and both values, before anything is touched.
"""

from __future__ import annotations

import json

from ..detectors import all_params
from ..errors import EarlyBirdError
from ..layout import RunLayout, read_json

RESUME_MAY_CHANGE = frozenset({
    # this invocation and its directory
    "output_dir", "overwrite_output_dir", "resume", "config", "cache_dir", "debug_crash_at_step", "ddp_timeout_minutes",
    "exit_code_on_preempt",
    # how the run is watched and saved
    "disable_tqdm", "logging_steps", "report_to", "eval_every", "checkpoint_every", "checkpoint_minutes",
    "keep_checkpoints", "save_steps", "save_every", "record_chunk",
    # evaluation only, and how data is loaded (not which)
    "per_device_eval_batch_size", "max_eval_samples", "dataloader_num_workers",
    # the global batch: loop.check_resumable compares it with the checkpoint's, processes included
    "per_device_train_batch_size", "gradient_accumulation_steps",
})
NOT_GIVEN = object()


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _shown(value) -> str:
    return "(not given)" if value is NOT_GIVEN else json.dumps(value)


def changed_flags(saved: dict, now: dict) -> list[str]:
    """`--flag saved -> now` for each flag of `now` that a resume may not change and that differs from `saved` (a
    run's args.json). A detector parameter absent from one side was not given there; any other flag absent from
    `saved` belongs to another version of the program and is not compared."""
    params = {f"eb_{name}" for name in all_params()}
    changes = []
    for key in [*now, *(k for k in saved if k not in now)]:
        if key in RESUME_MAY_CHANGE:
            continue
        if key in params:
            before, after = saved.get(key, NOT_GIVEN), now.get(key, NOT_GIVEN)
        elif key in saved and key in now:
            before, after = saved[key], json.loads(json.dumps(now[key]))  # as args.json holds it (tuples as lists)
        else:
            continue
        if before != after:
            changes.append(f"{_flag(key)} {_shown(before)} -> {_shown(after)}")
    return changes


def check_same_flags(run: RunLayout, flags: dict) -> None:
    """Refuse a --resume whose flags change the run (EarlyBirdError naming each flag and both values)."""
    saved = read_json(run.args)
    if not isinstance(saved, dict):
        raise EarlyBirdError(f"--resume: {run.args} is missing or not a JSON object; cannot tell that the flags are "
                             "this run's")
    changes = changed_flags(saved, flags)
    if changes:
        raise EarlyBirdError(
            f"--resume: {', '.join(changes)} (the run's {run.args.name} -> this command): a resumed run keeps the "
            "flags of its budget, schedule, optimiser, data, model, slimming, ticket and EB-Train; give the run's own "
            "values, or start a new run (another --output-dir, or --overwrite-output-dir)")


def finished_results(run: RunLayout) -> dict | None:
    """The results of a run that finished, None when it has not: results.json is written last, so its presence means
    the run ended (whatever checkpoints it kept: by minutes, the last one is rarely at the last step)."""
    results = read_json(run.results)
    return results if isinstance(results, dict) else None
