"""Every file name of a run directory, in one place: the writers (training) and the readers (report, tickets,
reproduce, the CLI) both take their paths from here.

    <run>/
      .lock                 held by the main process while a run is going (flock; it holds the owner's pid)
      args.json             the flags of the run (rewritten at each start, resumes included)
      metrics.jsonl         one JSON object per log / evaluation line
      results.json          the final evaluation, with the run's kind ("slim", "ticket", "random", "ebtrain", "dense");
                            written last: its presence means the run finished
      plan.json             the pruning plan used (tickets) or made at the draw (EB-Train)
      ebtrain.json          EB-Train summary: draw step, compute before / after it
      init/                 step-0 weights (slimming runs): `--rewind init` starts tickets from them
      records/              slimming coefficients: msa.npy, mlp.npy, steps.npy, meta.json (earlybird.records)
      snapshots/step-S/     weights after S steps (--save-steps / --save-every): `--rewind none`
      checkpoints/step-S/   resumable state: model/, optimizer.pt, scheduler.pt, scaler.pt, rng-<rank>.pt, state.json
      final/                the trained model (save_pretrained), with its tokenizer / image processor
      tracking/<name>/      experiment-tracker files (--report-to: TensorBoard event files, W&B's offline run)

A Trainer run with `earlybird.hf.EarlyBirdCallback(save_ticket=True)` keeps its ticket in `<output_dir>/ticket/`.
`resolve_input` is the one way a command or flag reads records, a plan or a model from "a run directory or the thing
inside it".

A study directory (`earlybird.reproduce`) holds runs/<name>/ (run directories), logs/<name>.log, draws.json,
jobs.json (each finished run's command, so a second pass reuses it) and the report (report.md and its figures).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .blocks import BLOCKS
from .errors import EarlyBirdError

# --------------------------------------------------------------------------- names

ARGS = "args.json"
METRICS = "metrics.jsonl"
RESULTS = "results.json"
PLAN = "plan.json"
EBTRAIN = "ebtrain.json"
LOCK = ".lock"
INIT = "init"
RECORDS = "records"
SNAPSHOTS = "snapshots"
CHECKPOINTS = "checkpoints"
FINAL = "final"
TRACKING = "tracking"
TICKET = "ticket"  # a Trainer run's drawn ticket (earlybird.hf.EarlyBirdCallback(save_ticket=True))
# What a run writes: what --overwrite-output-dir removes (nothing else in the directory is touched).
RUN_ENTRIES = (ARGS, METRICS, RESULTS, PLAN, EBTRAIN, INIT, RECORDS, SNAPSHOTS, CHECKPOINTS, FINAL, TRACKING)

# records/
STEPS_FILE = "steps.npy"
META_FILE = "meta.json"


def block_file(block: str) -> str:
    """The records file of a block: msa.npy, mlp.npy."""
    return f"{BLOCKS[block].name}.npy"


# checkpoints/step-S/ (and snapshots/step-S/)
STEP_PREFIX = "step-"
TEMPORARY_PREFIXES = (".tmp-", ".old-")  # half-written and half-removed checkpoints: never resumed from
CHECKPOINT_MODEL = "model"
OPTIMIZER = "optimizer.pt"
SCHEDULER = "scheduler.pt"
SCALER = "scaler.pt"
STATE = "state.json"

# a study directory (earlybird.reproduce)
STUDY_RUNS = "runs"
STUDY_LOGS = "logs"
STUDY_DRAWS = "draws.json"
STUDY_JOBS = "jobs.json"  # the finished runs and the command each was made with: what a second pass reuses
REPORT = "report.md"

# The kinds of run, written into results.json by the run itself (earlybird.training.config.TrainConfig.kind).
RUN_KINDS = ("slim", "ticket", "random", "ebtrain", "dense")


def rng_file(rank: int) -> str:
    return f"rng-{int(rank)}.pt"


def step_dir_name(step: int) -> str:
    return f"{STEP_PREFIX}{int(step)}"


def step_of(path: Path) -> int | None:
    """S for a directory named step-S, else None (temporary .tmp-step-S / .old-step-S included)."""
    name = Path(path).name
    if not name.startswith(STEP_PREFIX):
        return None
    try:
        return int(name[len(STEP_PREFIX):])
    except ValueError:
        return None


def list_step_dirs(parent: Path) -> dict[int, Path]:
    """{step: directory} of the complete `step-S` directories under parent (temporary ones are skipped)."""
    parent = Path(parent)
    if not parent.is_dir():
        return {}
    found = {}
    for path in parent.iterdir():
        step = step_of(path)
        if step is not None and path.is_dir():
            found[step] = path
    return dict(sorted(found.items()))


# --------------------------------------------------------------------------- a run directory


class RunLayout:
    """The paths of one run directory (nothing is read or written here)."""

    def __init__(self, path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunLayout({str(self.path)!r})"

    @property
    def args(self) -> Path:
        return self.path / ARGS

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def results(self) -> Path:
        return self.path / RESULTS

    @property
    def plan(self) -> Path:
        return self.path / PLAN

    @property
    def ebtrain(self) -> Path:
        return self.path / EBTRAIN

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    @property
    def records(self) -> Path:
        return self.path / RECORDS

    @property
    def init(self) -> Path:
        return self.path / INIT

    @property
    def final(self) -> Path:
        return self.path / FINAL

    @property
    def snapshots(self) -> Path:
        return self.path / SNAPSHOTS

    @property
    def tracking(self) -> Path:
        return self.path / TRACKING

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def snapshot(self, step: int) -> Path:
        return self.snapshots / step_dir_name(step)

    def checkpoint(self, step: int) -> Path:
        return self.checkpoints / step_dir_name(step)

    def checkpoint_tmp(self, step: int) -> Path:
        return self.checkpoints / f"{TEMPORARY_PREFIXES[0]}{step_dir_name(step)}"

    def latest_checkpoint(self) -> Path | None:
        found = list_step_dirs(self.checkpoints)
        return found[max(found)] if found else None

    def weights_at(self, step: int) -> list[Path]:
        """Where the weights after `step` steps may be: its snapshot, then its checkpoint's model."""
        return [self.snapshot(step), self.checkpoint(step) / CHECKPOINT_MODEL]

    def saved_steps(self) -> list[int]:
        """Steps whose weights were kept (snapshots and checkpoints)."""
        return sorted(set(list_step_dirs(self.snapshots)) | set(list_step_dirs(self.checkpoints)))

    def holds_run(self) -> bool:
        return self.path.is_dir() and any((self.path / entry).exists() for entry in RUN_ENTRIES)

    def is_run(self) -> bool:
        """A directory a run wrote (its args.json or records/ exist)."""
        return self.args.is_file() or self.records.is_dir()

    @classmethod
    def of_records(cls, records) -> "RunLayout":
        """The run a records directory (or one of its .npy files) belongs to: the directory above records/."""
        records = Path(records)
        records_dir = records.parent if records.suffix == ".npy" else records
        return cls(records_dir.parent)


# --------------------------------------------------------------------------- one way to name a run's inputs

# What each kind of input is, how to tell it, and where a run directory keeps it (a Trainer run with the callback's
# save_ticket=True keeps its model in ticket/, one of ours in final/).
INPUT_KINDS = {
    "records": ("records (msa.npy / mlp.npy with steps.npy, or the original code's .npy files)", (RECORDS,)),
    "plan": ("a plan (a JSON file)", (PLAN,)),
    "model": ("a model (a save_pretrained folder: config.json + weights)", (FINAL, TICKET)),
    "weights": ("a model (a save_pretrained folder: config.json + weights)", ()),
}


def _is_input(path: Path, kind: str) -> bool:
    if kind == "records":
        return path.is_file() or (path.is_dir() and any(p.suffix == ".npy" for p in path.iterdir()))
    if kind == "plan":
        return path.is_file()
    return (path / "config.json").is_file()


def _listing(path: Path, limit: int = 12) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    shown = ", ".join(names[:limit]) + (f", ... ({len(names)} entries)" if len(names) > limit else "")
    return shown or "nothing (an empty directory)"


def resolve_input(path, kind: str, flag: str | None = None) -> Path:
    """The one way every command and flag reads a run's records, plan or model: `path` names the thing itself, or a
    run directory that holds it (records/, plan.json; final/, or ticket/ for a Trainer run). `kind` is records, plan,
    model, or weights (a model folder itself only: which of a run's weights -- init/, final/, a snapshot -- is the
    user's choice). A path that does not exist is returned as is (its reader says so). EarlyBirdError, one line
    listing what the directory holds, when it is none of these, or holds several (final/ and ticket/)."""
    path = Path(path)
    if not path.exists() or _is_input(path, kind) or not path.is_dir():
        return path
    what, inside = INPUT_KINDS[kind]
    found = [path / name for name in inside
             if ((path / name).is_dir() if kind == "records" else _is_input(path / name, kind))]
    if len(found) == 1:
        return found[0]
    where = f"{flag} {path}" if flag else str(path)
    if found:
        raise EarlyBirdError(f"{where}: holds {' and '.join(p.name + '/' for p in found)}; cannot tell which is "
                             f"{what.split(' (')[0]}: name one of them")
    if kind == "weights":
        raise EarlyBirdError(f"{where}: not a model (no config.json); found: {_listing(path)}; expected {what}")
    if kind == "model":
        raise EarlyBirdError(f"{where}: not a model (no config.json, nor {FINAL}/config.json) nor a Trainer output "
                             f"directory (no {TICKET}/config.json); found: {_listing(path)}")
    raise EarlyBirdError(f"{where}: neither {what} nor a run directory (no {inside[0]}); found: {_listing(path)}")


def records_path(path, flag: str | None = None) -> Path:
    """A records argument as users give it: a run directory (its records/), a records directory or a .npy file."""
    return resolve_input(path, "records", flag)


# --------------------------------------------------------------------------- checkpoint files


class CheckpointLayout:
    """The files of one checkpoint directory (checkpoints/step-S or its temporary .tmp-step-S)."""

    def __init__(self, path):
        self.path = Path(path)

    @property
    def model(self) -> Path:
        return self.path / CHECKPOINT_MODEL

    @property
    def optimizer(self) -> Path:
        return self.path / OPTIMIZER

    @property
    def scheduler(self) -> Path:
        return self.path / SCHEDULER

    @property
    def scaler(self) -> Path:
        return self.path / SCALER

    @property
    def state(self) -> Path:
        return self.path / STATE

    def rng(self, rank: int) -> Path:
        return self.path / rng_file(rank)


# --------------------------------------------------------------------------- reading a finished run


def read_json(path: Path):
    """A JSON file's content, None when it does not exist; EarlyBirdError naming it when it is unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise EarlyBirdError(f"{path}: unreadable JSON ({err})") from None


@dataclass
class Run:
    """What one run directory says about itself: its kind, its results, its plan and its EB-Train summary."""

    path: Path
    results: dict = field(default_factory=dict)
    ebtrain: dict | None = None
    plan: dict | None = None

    @property
    def kind(self) -> str | None:
        return self.results.get("kind")

    @property
    def metric(self) -> tuple[str, float | None]:
        """The run's headline metric: accuracy, F1 for SQuAD, perplexity for a causal LM (lower is better)."""
        for name in ("accuracy", "f1", "exact_match", "perplexity"):
            if isinstance(self.results.get(name), (int, float)):
                return name, float(self.results[name])
        return "accuracy", None

    @property
    def provenance(self) -> dict:
        return (self.plan or {}).get("provenance") or {}

    @property
    def prune_step(self) -> int | None:
        step = self.provenance.get("step")
        return None if step is None else int(step)

    @property
    def ratios(self) -> tuple[float, float]:
        """(head ratio, neuron ratio) of the plan."""
        return (float(self.provenance.get("self_ratio") or 0.0), float(self.provenance.get("inter_ratio") or 0.0))

    @property
    def random_seed(self) -> int | None:
        return self.provenance.get("random_seed")


def read_run(path) -> Run:
    """A run directory's own account of itself (results.json, plan.json, ebtrain.json)."""
    layout = RunLayout(path)
    if not layout.path.is_dir():
        raise EarlyBirdError(f"{layout.path}: not a run directory")
    return Run(layout.path, read_json(layout.results) or {}, read_json(layout.ebtrain), read_json(layout.plan))
