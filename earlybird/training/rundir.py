"""The run directory: args.json, metrics.jsonl, results, snapshots and atomic, resumable checkpoints.

    <output-dir>/
      .lock                 held by the main process while a run is going (a second run is refused)
      args.json             the flags of the run (rewritten at each start, resumes included)
      metrics.jsonl         one JSON object per log / evaluation line
      results.json          the final evaluation
      plan.json             the pruning plan used (ticket runs) or made at the draw (EB-Train)
      ebtrain.json          EB-Train summary: draw step, compute before / after it
      init/                 step-0 weights (slimming runs): `--rewind init` starts tickets from them
      records/              slimming coefficients (earlybird.records format)
      snapshots/step-S/     weights after S steps (--save-steps / --save-every): `--rewind none`
      checkpoints/step-S/   resumable state: model/, optimizer.pt, scheduler.pt, rng-<rank>.pt, state.json
      final/                the trained model (save_pretrained), with its tokenizer / image processor

Only the main process writes, except each process's RNG state in a checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from ..errors import EarlyBirdError
from ..records import write_json_atomic

# What a run writes: what --overwrite-output-dir removes (nothing else in the directory is touched).
RUN_ENTRIES = ("args.json", "metrics.jsonl", "results.json", "plan.json", "ebtrain.json", "init", "records",
               "snapshots", "checkpoints", "final")
CHECKPOINT_PREFIX = "step-"


def step_dir_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{int(step)}"


def _step_of(path: Path) -> int | None:
    name = path.name
    if not name.startswith(CHECKPOINT_PREFIX):
        return None
    try:
        return int(name[len(CHECKPOINT_PREFIX):])
    except ValueError:
        return None


def list_step_dirs(parent: Path) -> dict[int, Path]:
    """{step: directory} of the complete `step-S` directories under parent (temporary ones are skipped)."""
    if not parent.is_dir():
        return {}
    found = {}
    for path in parent.iterdir():
        step = _step_of(path)
        if step is not None and path.is_dir():
            found[step] = path
    return dict(sorted(found.items()))


class RunDir:
    def __init__(self, path, *, is_main_process: bool = True):
        self.path = Path(path)
        self.is_main = is_main_process
        self._lock_file = None

    # -- layout ---------------------------------------------------------------------------

    @property
    def records_dir(self) -> Path:
        return self.path / "records"

    @property
    def init_dir(self) -> Path:
        return self.path / "init"

    @property
    def final_dir(self) -> Path:
        return self.path / "final"

    @property
    def checkpoints_dir(self) -> Path:
        return self.path / "checkpoints"

    @property
    def snapshots_dir(self) -> Path:
        return self.path / "snapshots"

    def snapshot_dir(self, step: int) -> Path:
        return self.snapshots_dir / step_dir_name(step)

    def latest_checkpoint(self) -> Path | None:
        found = list_step_dirs(self.checkpoints_dir)
        return found[max(found)] if found else None

    # -- life cycle -------------------------------------------------------------------------

    def holds_run(self) -> bool:
        return self.path.is_dir() and any((self.path / e).exists() for e in RUN_ENTRIES)

    def check(self, *, resume: bool, overwrite: bool) -> None:
        """Refuse to mix runs: an existing run needs --resume or --overwrite-output-dir (all processes call it)."""
        if self.path.exists() and not self.path.is_dir():
            raise EarlyBirdError(f"--output-dir {self.path} exists and is not a directory")
        if resume:
            if self.latest_checkpoint() is None:
                raise EarlyBirdError(f"--resume: no checkpoint in {self.checkpoints_dir} "
                                     "(save them with --checkpoint-every N)")
        elif self.holds_run() and not overwrite:
            raise EarlyBirdError(f"--output-dir {self.path} already holds a run; pass --resume to continue it "
                                 "or --overwrite-output-dir to start over")

    def open(self, *, overwrite: bool) -> None:
        """Main process: clear a previous run if asked, create the directory and take the lock."""
        if not self.is_main:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        if overwrite:
            for entry in RUN_ENTRIES:
                target = self.path / entry
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()

    def _take_lock(self) -> None:
        import fcntl

        self._lock_file = open(self.path / ".lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.close()
            self._lock_file = None
            raise EarlyBirdError(f"--output-dir {self.path} is in use by another run (it holds {self.path / '.lock'})") from None
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()

    def close(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing releases the flock
            self._lock_file = None

    # -- files --------------------------------------------------------------------------------

    def write_json(self, name: str, obj) -> None:
        if self.is_main:
            write_json_atomic(obj, self.path / name)

    def append_metrics(self, entry: dict) -> None:
        if not self.is_main:
            return
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")

    def truncate_metrics(self, after_step: int) -> None:
        """On resume: drop the lines a killed run wrote after the checkpoint (they are about to be redone)."""
        path = self.path / "metrics.jsonl"
        if not self.is_main or not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut by the kill
                continue
            if entry.get("step", 0) <= after_step:
                kept.append(line)
        tmp = path.with_name(".metrics.jsonl.tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)

    # -- checkpoints ----------------------------------------------------------------------------

    def checkpoint_tmp(self, step: int) -> Path:
        return self.checkpoints_dir / f".tmp-{step_dir_name(step)}"

    def commit_checkpoint(self, step: int, keep: int) -> Path:
        """Main process: rename the finished temporary directory into place, then drop the oldest."""
        final = self.checkpoints_dir / step_dir_name(step)
        if final.exists():
            shutil.rmtree(final)
        os.replace(self.checkpoint_tmp(step), final)
        found = list_step_dirs(self.checkpoints_dir)
        for old in list(found)[:-keep]:
            shutil.rmtree(found[old], ignore_errors=True)
        return final

    def clean_temporaries(self) -> None:
        """Main process: remove half-written checkpoints a kill left behind."""
        if not self.is_main or not self.checkpoints_dir.is_dir():
            return
        for path in self.checkpoints_dir.iterdir():
            if path.name.startswith(".tmp-"):
                shutil.rmtree(path, ignore_errors=True)
