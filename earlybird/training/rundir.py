"""The run directory's life cycle: the lock, the checks before a run starts, atomic JSON and resumable checkpoints.

Its layout (every file name) is `earlybird.layout`; `RunDir` adds what the training run does with it. Only the main
process writes, except each process's RNG state in a checkpoint.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from pathlib import Path

from .. import faults
from ..errors import EarlyBirdError
from ..fileio import fsync_dir, fsync_tree, named, write_json_atomic
from ..layout import RUN_ENTRIES, TEMPORARY_PREFIXES, RunLayout, list_step_dirs
from .resume import finished_results


def _remove_tree(path: Path) -> None:
    """Rename out of the way (atomic), then delete: a kill half-way never leaves a partial step-S behind."""
    trash = path.with_name(f"{TEMPORARY_PREFIXES[1]}{path.name}")
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


def write_failure(err: BaseException, path: Path) -> OSError:
    """An OSError naming what could not be written, whatever the writer raised.

    A full disk reaches us as OSError(ENOSPC) from plain writes, but as RuntimeError from torch.save and
    as SafetensorError from save_pretrained: those are turned into an OSError saying so, with the free space.
    """
    if isinstance(err, OSError):
        return named(err, path)
    reason = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return OSError(errno.EIO, reason, str(path))
    if free < (1 << 20):  # what torch.save's "unexpected pos" and safetensors' IoError mean on a full disk
        return OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} ({free} bytes free; {reason})", str(path))
    return OSError(errno.EIO, f"{reason} ({free} bytes free on that filesystem)", str(path))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunDir(RunLayout):
    def __init__(self, path, *, is_main_process: bool = True):
        super().__init__(path)
        self.is_main = is_main_process
        self._lock_file = None
        self.stale_lock: str | None = None  # a message when the lock of a dead run was taken over
        self.note: str | None = None  # what `check(resume="auto")` decided, in one line

    # -- life cycle -------------------------------------------------------------------------

    def check(self, *, resume, overwrite: bool) -> str:
        """Refuse to mix runs, and an output directory that cannot be written (all processes call it); return what
        this command does with the directory: "resume", "start" (nothing there) or "overwrite" (start over in place).

        An existing run needs --resume or --overwrite-output-dir; a run directory whose lock a live process holds is
        refused whatever the flags; the directory (or its nearest existing parent) must accept a new file -- tried for
        real, since permission bits say nothing to root. `resume="auto"` (a scheduler's resubmission) continues a run
        with a checkpoint (or a finished one, which is then left as it is), starts one where there is none, and starts
        over in place a run stopped before its first checkpoint (nothing of it can be resumed); `note` says which.
        """
        if self.path.exists() and not self.path.is_dir():
            raise EarlyBirdError(f"--output-dir {self.path} exists and is not a directory")
        holder = self.lock_holder()
        if holder is not None:
            raise EarlyBirdError(f"--output-dir {self.path} is in use by another run (pid {holder} holds "
                                 f"{self.lock}); wait for it to finish or stop it first")
        holds_run = self.holds_run()  # (False for a path that cannot be a directory: _check_writable says why)
        resumable = holds_run and (self.latest_checkpoint() is not None or finished_results(self) is not None)
        never_checkpointed = (f"{self.path} holds a run stopped before its first checkpoint (a run saves one every "
                              "--checkpoint-minutes or --checkpoint-every N steps): nothing of it can be resumed")
        self.note = None
        if resume == "auto":
            if resumable:
                mode = "resume"
            elif holds_run:
                mode = "overwrite"
                self.note = f"--resume auto: {never_checkpointed}; starting it over in place"
            else:
                mode = "start"
                self.note = f"--resume auto: no run in {self.path} yet; starting it"
        elif resume:
            if not resumable:
                why = (f"{never_checkpointed}; start it over with --overwrite-output-dir" if holds_run else
                       "no run there yet")
                raise EarlyBirdError(f"--resume: no checkpoint in {self.checkpoints} ({why}); --resume auto continues "
                                     "a run when it can and starts it otherwise")
            mode = "resume"
        elif holds_run and not overwrite:
            if finished_results(self) is not None:
                what = f"a finished run ({self.results.name}); --overwrite-output-dir starts it over"
            elif self.latest_checkpoint() is not None:
                what = (f"a run with checkpoints (newest {self.latest_checkpoint().name}); pass --resume to continue it "
                        "or --overwrite-output-dir to start over")
            else:
                what = f"a run stopped before its first checkpoint; pass --overwrite-output-dir to start it over"
            raise EarlyBirdError(f"--output-dir {self.path} already holds {what} (--resume auto decides by itself)")
        else:
            mode = "overwrite" if overwrite else "start"
        self._check_writable()
        return mode

    def _check_writable(self) -> None:
        probe = self.path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise EarlyBirdError(f"--output-dir {self.path}: cannot be created, {probe} is a file, not a directory")
        try:
            handle, name = tempfile.mkstemp(prefix=".earlybird-write-test-", dir=probe)
            os.close(handle)
            os.unlink(name)
        except OSError as err:
            raise EarlyBirdError(f"--output-dir {self.path} is not writable: cannot create a file in {probe} "
                                 f"({err.strerror}); expected a writable directory") from None

    def lock_holder(self) -> str | None:
        """The pid (as written in the lock file) of the live process holding the lock; None when it is free."""
        import fcntl

        path = self.lock
        if not path.is_file():
            return None
        try:
            handle = open(path, "rb")
        except OSError:
            return None
        try:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return handle.read().decode(errors="replace").strip() or "unknown"
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None
        finally:
            handle.close()

    def open(self, *, overwrite: bool) -> None:
        """Main process: take the lock, then clear a previous run if asked (never someone else's live run)."""
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

        # "a+": opening must not truncate the pid of a live owner before we know we hold the lock.
        self._lock_file = open(self.lock, "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "unknown"
            self._lock_file.close()
            self._lock_file = None
            raise EarlyBirdError(f"--output-dir {self.path} is in use by another run (pid {holder} holds "
                                 f"{self.lock}); wait for it to finish or stop it first") from None
        self._lock_file.seek(0)
        previous = self._lock_file.read().strip()
        if previous and previous != str(os.getpid()):
            state = ("no longer running" if not previous.isdigit() or not _pid_alive(int(previous))
                     else "running but not holding the lock")
            self.stale_lock = (f"took over the stale lock {self.lock} of pid {previous} ({state}: "
                               "a run that was killed)")
        self._lock_file.seek(0)
        self._lock_file.truncate()
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()

    def close(self) -> None:
        if self._lock_file is not None:
            try:  # a clean exit empties .lock: a pid left in it means its run was killed
                self._lock_file.seek(0)
                self._lock_file.truncate()
                self._lock_file.flush()
            except OSError:
                pass
            self._lock_file.close()  # closing releases the flock
            self._lock_file = None

    # -- files --------------------------------------------------------------------------------

    def write_json(self, path: Path, obj) -> None:
        """Main process: `obj` to one of this run's files (e.g. `self.results`), atomically."""
        if self.is_main:
            write_json_atomic(obj, path)

    def append_metrics(self, entry: dict) -> None:
        if not self.is_main:
            return
        with open(self.metrics, "a", encoding="utf-8") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")

    def truncate_metrics(self, after_step: int) -> None:
        """On resume: drop the lines a killed run wrote after the checkpoint (they are about to be redone), and any
        "final" line (a run killed before results.json has not finished: its end is redone)."""
        path = self.metrics
        if not self.is_main or not path.exists():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:  # a line cut by the kill
                continue
            if entry.get("step", 0) <= after_step and entry.get("type") != "final":
                kept.append(line)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        os.replace(tmp, path)

    # -- checkpoints ----------------------------------------------------------------------------

    def commit_checkpoint(self, step: int, keep: int) -> Path:
        """Main process: fsync the finished temporary directory, rename it into place, then drop the oldest."""
        tmp = self.checkpoint_tmp(step)
        final = self.checkpoint(step)
        fsync_tree(tmp)
        if final.exists():
            _remove_tree(final)
        os.replace(tmp, final)
        fsync_dir(self.checkpoints)
        faults.hit("checkpoint-commit", final)
        found = list_step_dirs(self.checkpoints)
        for old in list(found)[:-keep]:
            _remove_tree(found[old])
        return final

    def clean_temporaries(self) -> None:
        """Main process: remove half-written (or half-removed) checkpoints a kill left behind."""
        if not self.is_main or not self.checkpoints.is_dir():
            return
        for path in self.checkpoints.iterdir():
            if path.name.startswith(TEMPORARY_PREFIXES):
                shutil.rmtree(path, ignore_errors=True)
