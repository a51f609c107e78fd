"""Data helpers shared by the image and text pipelines: loading from anywhere, columns, splits, loader defaults."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import EarlyBirdError

VALIDATION_NAMES = ("validation", "valid", "val", "dev", "validation_matched")


def load_dataset_any(name: str, cache_dir=None, builder: str | None = None, **kwargs):
    """A DatasetDict from a `save_to_disk` directory, a local directory for `builder`, or the Hub."""
    import datasets

    path = Path(name)
    if path.exists():
        if not path.is_dir():
            raise EarlyBirdError(f"--dataset {name}: not a directory")
        try:
            if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
                loaded = datasets.load_from_disk(str(path))
            elif builder is not None:
                loaded = datasets.load_dataset(builder, data_dir=str(path), cache_dir=cache_dir, **kwargs)
            else:
                loaded = datasets.load_dataset(str(path), cache_dir=cache_dir, **kwargs)
        except EarlyBirdError:
            raise
        except Exception as err:  # datasets raises many types for a directory it cannot read
            empty = _empty_saved_splits(path)
            if empty:  # datasets cannot reload a split saved with no rows (IndexError deep inside)
                raise EarlyBirdError(f"--dataset {name}: the {', '.join(empty)} split is empty (no data files); "
                                     "expected labelled examples") from None
            if type(err).__name__ == "EmptyDatasetError":
                raise EarlyBirdError(f"--dataset {name}: the directory holds no data files (an empty data set); "
                                     "expected e.g. train/<class>/*.png") from None
            raise EarlyBirdError(f"--dataset {name}: cannot read this directory ({_short(err)})") from None
    else:
        try:
            loaded = datasets.load_dataset(name, cache_dir=cache_dir, **kwargs)
        except Exception as err:
            raise EarlyBirdError(f"--dataset {name}: no such local directory, and loading it from the Hub failed "
                                 f"({_short(err)})") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    return loaded


def _empty_saved_splits(path: Path) -> list[str]:
    """Splits of a save_to_disk directory that hold no data file (saved with zero rows)."""
    import json

    empty = []
    for state in sorted(path.glob("*/state.json")) + ([path / "state.json"] if (path / "state.json").exists() else []):
        try:
            if not json.loads(state.read_text()).get("_data_files"):
                empty.append(state.parent.name if state.parent != path else "train")
        except (OSError, ValueError, AttributeError):
            continue
    return empty


def _short(err: Exception) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:200]}"


def find_column(dataset, candidates, what: str, where: str) -> str:
    for name in candidates:
        if name in dataset.column_names:
            return name
    raise EarlyBirdError(f"{where}: no {what} column (expected one of {', '.join(candidates)}); "
                         f"columns: {', '.join(dataset.column_names)}")


def _has_labels(dataset, label_column: str) -> bool:
    """Hub test splits (ImageNet, GLUE) carry -1 for every label: not usable for a final evaluation."""
    if label_column not in dataset.column_names or len(dataset) == 0:
        return False
    labels = np.asarray(dataset.select(range(min(len(dataset), 1000)))[label_column])
    return labels.dtype.kind not in "iu" or bool((labels >= 0).any())


def resolve_splits(dd, label_column: str, where: str, seed: int = 0, holdout: float = 0.1) -> tuple[dict, str]:
    """{"train", "validation", "test"} splits and the name of the one the final evaluation uses.

    validation: a split named validation/valid/val/dev, else the test split, else a seeded 10% of train.
    test: a labelled test split, else the validation split (then the final evaluation is "validation").
    """
    if "train" not in dd:
        raise EarlyBirdError(f"{where}: no 'train' split; splits: {', '.join(dd) or 'none'}")
    train = dd["train"]
    if len(train) == 0:
        raise EarlyBirdError(f"{where}: the train split is empty; expected labelled training examples")
    validation = next((dd[n] for n in VALIDATION_NAMES if n in dd), None)
    test = dd["test"] if "test" in dd and _has_labels(dd["test"], label_column) else None
    if validation is None and test is not None:
        validation = test
    if validation is None:
        parts = train.train_test_split(test_size=holdout, seed=seed)
        train, validation = parts["train"], parts["test"]
    splits = {"train": train, "validation": validation, "test": test if test is not None else validation}
    return splits, ("test" if test is not None else "validation")


def subset(dataset, limit: int | None):
    return dataset if limit is None or limit >= len(dataset) else dataset.select(range(limit))


def label_values(dataset, label_column: str) -> np.ndarray:
    """The label column as a numpy array, through Arrow (row-wise formatting would take seconds per million)."""
    column = dataset.with_format("arrow")[label_column]
    return np.asarray(column.to_numpy() if hasattr(column, "to_numpy") else column)


def check_labels(splits: dict, label_column: str, num_labels: int, where: str) -> None:
    """Every split used is non-empty with integer labels in 0..num_labels-1, and training sees >= 2 classes."""
    for name, split in splits.items():
        if len(split) == 0:
            raise EarlyBirdError(f"{where}: the {name} split is empty; expected labelled examples")
        values = label_values(split, label_column)
        if values.dtype.kind not in "iu":
            raise EarlyBirdError(f"{where}: the {name} split's {label_column!r} column holds {values.dtype} values; "
                                 "expected integer class indices")
        bad = values[(values < 0) | (values >= num_labels)]
        if bad.size:
            raise EarlyBirdError(f"{where}: the {name} split has label {int(bad[0])} ({bad.size} such examples); "
                                 f"expected labels in 0..{num_labels - 1}")
    classes = np.unique(label_values(splits["train"], label_column))
    if classes.size < 2:
        raise EarlyBirdError(f"{where}: the train split has a single class (label {int(classes[0])}); expected at "
                             "least 2 classes to learn from")


# --------------------------------------------------------------------------- loading batches


class EpochIndices(list):
    """A batch of example indices that knows its epoch.

    The training loop's batch sampler yields these, and torch's DataLoader hands them as they are to a dataset's
    `__getitems__` -- in the main process or in a worker -- so a dataset that augments can seed per (seed, epoch,
    example) although its worker processes live across epochs and never see the main process's copy change.
    """

    def __init__(self, indices, epoch: int):
        super().__init__(indices)
        self.epoch = int(epoch)


MAX_DEFAULT_WORKERS = 16


def default_num_workers(dataset) -> int:
    """DataLoader worker processes when --dataloader-num-workers is not given.

    Data held in memory (decoded once, or tokenised once) gets 0: a batch is a gather and a normalisation, which a
    worker process would only add copies to. A dataset that decodes from files (`decodes_from_files`: images from
    imagefolder, the Hub, save_to_disk) gets every CPU this process may use but one (left to the training process),
    the CPUs shared among the node's processes, at least 1 and at most MAX_DEFAULT_WORKERS: one worker decodes and
    augments ~370 ImageNet-sized JPEGs per CPU-second, and a ViT-Base step on a current GPU consumes thousands
    (docs/benchmarks.md, section 8).
    """
    if not getattr(dataset, "decodes_from_files", False):
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cpus // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(1, min(MAX_DEFAULT_WORKERS, per_process - 1))
