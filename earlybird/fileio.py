"""Durable file writes: fsync, and write-then-rename so a reader never sees half a file.

Every module that writes a file a later run relies on (records' meta.json, plans, run-directory JSON, reports,
checkpoints, the patch tool's journal) goes through these. Standard library only: the patch tool imports it before
transformers is importable.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def fsync_file(path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path) -> None:
    """fsync a directory (its entries: a rename inside it is on disk). Best effort: some filesystems refuse."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path) -> None:
    """fsync every file under `path`, then the directories: the data is on disk before a rename publishes it."""
    for root, _, files in os.walk(path):
        for name in files:
            fsync_file(os.path.join(root, name))
    for root, dirs, _ in os.walk(path, topdown=False):
        for name in dirs:
            fsync_dir(Path(root) / name)
    fsync_dir(path)


def named(err: OSError, path) -> OSError:
    """The same OSError, naming the file when the OS did not (a failed write() names none)."""
    if getattr(err, "filename", None):
        return err
    return OSError(err.errno, err.strerror or str(err), str(path))


def write_text_atomic(text: str, path) -> None:
    """Write `text` to a temporary file beside `path`, fsync it, rename it over `path`, fsync the directory.

    On failure (disk full...) the temporary file is removed, `path` keeps its previous content, and the OSError
    names `path`.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise named(err, path) from None
    fsync_dir(path.parent)


def write_json_atomic(obj, path) -> None:
    """`obj` as indented JSON with sorted keys, written atomically (see write_text_atomic)."""
    write_text_atomic(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)


def replace_marked(path, name: str, text: str) -> bool:
    """Replace what lies between `<!-- name:start -->` and `<!-- name:end -->` in a markdown file (the generated
    tables in docs/), atomically; False (nothing written) when the file lacks the markers."""
    import re

    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    doc = Path(path).read_text()
    if start not in doc or end not in doc:
        return False
    write_text_atomic(re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: f"{start}\n{text}\n{end}", doc,
                             flags=re.S), path)
    return True
