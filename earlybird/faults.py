"""Test-only fault injection: make this process die (SIGKILL) or fail a write (ENOSPC) at a named point.

    EARLYBIRD_FAULT="records-append:kill@2"            # SIGKILL in the middle of the 2nd records flush
    EARLYBIRD_FAULT="checkpoint-save:enospc@1,step:kill@9"

Each entry is `point:action@n`: at the n-th time this process reaches `point` (counted from 1), do
`action` -- `kill` (os.kill(getpid(), SIGKILL): nothing after it runs, no cleanup, no flush), `enospc`
(raise OSError(ENOSPC) naming the file being written, as a full disk would), `stall=S` (sleep S seconds, as
a slow disk or a large data set would), `sigterm` / `sigint` (a real SIGTERM /
SIGINT to this process, as a scheduler or Ctrl-C sends it) or `sigterm-group` (a real SIGTERM to this process's whole
process group: a launcher and all its workers). With EARLYBIRD_FAULT_RANK=R set, only the process whose RANK is R
(torchrun's variable; 0 when unset) arms the plan: a signal that reaches one process of several. The points:

| point | where |
|---|---|
| `records-append` | a records flush: the new rows are written, no header is updated yet |
| `records-commit` | a records flush: the block headers are updated, `steps.npy`'s (the commit marker) is not |
| `checkpoint-save` | a checkpoint save: the model is in `checkpoints/.tmp-step-S`, optimizer and state are not |
| `checkpoint-commit` | a checkpoint save: renamed to `step-S`, older checkpoints not yet removed |
| `step` | after optimizer step S, before its coefficients are recorded |
| `data-prepare` | the main process, preparing the data while the others wait (`main_process_first`) |
| `patch-stage`, `patch-backup`, `patch-swap` | `transformers_patch apply`: after each staged / backed-up / swapped file |

The variable is read once, when this module is imported (`configure()` re-reads it, e.g. in a forked
child); unset, `FAULTS` is empty and `hit()` returns at once. Standard library only (the patch tool uses it).
"""

from __future__ import annotations

import errno
import os
import signal
import time

ENV = "EARLYBIRD_FAULT"
RANK_ENV = "EARLYBIRD_FAULT_RANK"
ACTIONS = ("kill", "enospc", "stall", "sigterm", "sigint", "sigterm-group")

FAULTS: dict[str, tuple[str, int]] = {}
_counts: dict[str, int] = {}


def parse(spec: str | None) -> dict[str, tuple[str, int]]:
    plan = {}
    for entry in (spec or "").replace(";", ",").split(","):
        entry = entry.strip()
        if not entry:
            continue
        try:
            point, rest = entry.split(":", 1)
            action, _, nth = rest.partition("@")
            nth = int(nth or 1)
        except ValueError:
            raise ValueError(f"{ENV}: bad entry {entry!r}; expected point:action@n") from None
        name, _, seconds = action.partition("=")
        if name not in ACTIONS or nth < 1 or bool(seconds) != (name == "stall") or not _seconds(seconds):
            raise ValueError(f"{ENV}: bad entry {entry!r}; action is one of kill, enospc, stall=SECONDS, sigterm, sigint, sigterm-group; n >= 1")
        plan[point.strip()] = (action, nth)
    return plan


def _seconds(text: str) -> bool:
    try:
        return not text or float(text) >= 0
    except ValueError:
        return False


def configure(spec: str | None = None) -> None:
    """(Re)read the fault plan: from `spec`, else from the environment."""
    FAULTS.clear()
    _counts.clear()
    rank = os.environ.get(RANK_ENV)
    if rank is not None and rank != os.environ.get("RANK", "0"):
        return
    FAULTS.update(parse(os.environ.get(ENV) if spec is None else spec))


def armed(point: str) -> bool:
    return point in FAULTS


def hit(point: str, path=None) -> None:
    """The fault planned for `point`, if this is its n-th hit; nothing otherwise."""
    if not FAULTS or point not in FAULTS:
        return
    _counts[point] = count = _counts.get(point, 0) + 1
    action, nth = FAULTS[point]
    if count != nth:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action.startswith("stall="):
        time.sleep(float(action.partition("=")[2]))
        return
    if action in ("sigterm", "sigint"):
        os.kill(os.getpid(), signal.SIGTERM if action == "sigterm" else signal.SIGINT)
        return
    if action == "sigterm-group":
        os.killpg(os.getpgid(0), signal.SIGTERM)
        return
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), None if path is None else str(path))


configure()
