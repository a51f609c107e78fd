"""The embedded default data set: scikit-learn's bundled digits (no download, so everything runs offline).

1797 grayscale 8x8 images of the digits 0-9 (pixel values 0-16), as RGB PIL images in a
`datasets.DatasetDict` with a fixed stratified train / validation / test split -- the same
columns (`image`, `label`) as any image data set, so it goes through the same pipeline.

Built once, then kept with `save_to_disk` in the datasets cache (or `cache_dir`), under a name that
holds scikit-learn's version and CACHE_VERSION: a later process reads it into memory in milliseconds
instead of importing scikit-learn and encoding the 1797 images again (~0.7 s of every run's startup).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

SPLIT_SEED = 0  # fixed: the split never depends on --seed, so runs with different seeds compare
VALIDATION_SIZE = 300
TEST_SIZE = 300
CACHE_VERSION = 1  # bump when what build_digits_dataset makes changes


def build_digits_dataset():
    import datasets
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    labels = digits.target.astype(np.int64)
    index = np.arange(len(labels))
    rest, test = train_test_split(index, test_size=TEST_SIZE, stratify=labels, random_state=SPLIT_SEED)
    train, validation = train_test_split(rest, test_size=VALIDATION_SIZE, stratify=labels[rest],
                                         random_state=SPLIT_SEED)
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=[str(i) for i in range(10)])})

    def split(rows):
        rows = np.sort(rows)
        return datasets.Dataset.from_dict(
            {"image": [Image.fromarray(images[i]).convert("RGB") for i in rows], "label": labels[rows].tolist()},
            features=features)

    return datasets.DatasetDict({"train": split(train), "validation": split(validation), "test": split(test)})


def cache_path(cache_dir=None) -> Path:
    import datasets
    from importlib.metadata import version

    root = Path(cache_dir) if cache_dir else Path(datasets.config.HF_DATASETS_CACHE)
    return root / "earlybird-digits" / f"v{CACHE_VERSION}-scikit-learn-{version('scikit-learn')}"


def load_digits_dataset(cache_dir=None):
    """The digits DatasetDict, held in memory: from the cache when it is there, else built and cached."""
    import datasets

    path = cache_path(cache_dir)
    if path.is_dir():
        try:
            return datasets.load_from_disk(str(path), keep_in_memory=True)
        except Exception:  # an unreadable cache (a partial copy, another datasets version): built again below
            shutil.rmtree(path, ignore_errors=True)
    built = build_digits_dataset()
    _save(built, path)
    return built


def _save(dd, path: Path) -> None:
    """save_to_disk beside `path`, then renamed to it: a reader sees a complete cache or none. A cache that cannot be
    written (read-only, full) is skipped: the next run builds the data set again."""
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    tmp = path.with_name(f".tmp-{path.name}-{os.getpid()}")
    quiet = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        dd.save_to_disk(str(tmp))
        os.replace(tmp, path)
    except OSError:  # no space or no permission; or another process renamed its copy first
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not quiet:
            enable_progress_bars()
