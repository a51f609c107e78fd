"""Slimming-coefficient records: the recorder that writes them and the loader that reads them.

On-disk format (one run directory; see docs/library.md):

* ``msa.npy``  float (T, L, H)  -- attention-head coefficients, step-major
* ``mlp.npy``  float (T, L, I)  -- intermediate-neuron coefficients, step-major
* ``steps.npy`` int64 (T,)      -- the training step of each row, strictly increasing
* ``meta.json``                 -- layers, heads, neurons, every, dtype, blocks, user meta

Either block may be absent. The ``.npy`` files are ordinary NumPy files with a header
padded to a fixed 128 bytes so it never moves. An append writes the new rows after the
committed ones, fsyncs, rewrites the block headers' row count in place, and rewrites
``steps.npy``'s header last: ``steps.npy``'s row count is the commit marker. A run killed at
any point leaves every row up to the last completed flush readable, and the loader ignores
rows a file holds beyond the committed count (a kill mid-append).
"""

from __future__ import annotations

import json
import math
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import faults
from .blocks import BLOCKS
from .errors import EarlyBirdError
from .fileio import fsync_dir, named, write_json_atomic
from .layout import META_FILE, STEPS_FILE, block_file

FORMAT_NAME = "earlybird-records"
FORMAT_VERSION = 1
HEADER_BYTES = 128

# The research code's file names; those arrays are layer-major (L, T, n) with no steps file.
ORIGINAL_FILES = {
    "self_slimming_coef_records.npy": ("msa", "original-finetuning"),
    "inter_slimming_coef_records.npy": ("mlp", "original-finetuning"),
    "msa_slimming_coefs.npy": ("msa", "original-pretraining"),
    "mlp_slimming_coefs.npy": ("mlp", "original-pretraining"),
}
# Rows per slice when scanning for NaN/inf: bounds memory for records of any length.
_SCAN_ELEMENTS = 1 << 24


# --------------------------------------------------------------------------- npy helpers


def _npy_header(dtype: np.dtype, shape: tuple) -> bytes:
    """A version-1.0 .npy header padded to exactly HEADER_BYTES."""
    descr = np.lib.format.dtype_to_descr(np.dtype(dtype))
    text = "{'descr': %r, 'fortran_order': False, 'shape': %r, }" % (descr, tuple(int(s) for s in shape))
    body = HEADER_BYTES - 10
    if len(text) + 1 > body:
        raise EarlyBirdError(f"shape {shape} does not fit a {HEADER_BYTES}-byte .npy header")
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", body) + (text.ljust(body - 1) + "\n").encode("latin1")


@dataclass
class _NpyInfo:
    path: Path
    shape: tuple
    dtype: np.dtype
    fortran: bool
    offset: int
    available_rows: int  # complete rows physically present after the header


def _read_npy_info(path: Path) -> _NpyInfo:
    if not path.is_file():
        raise EarlyBirdError(f"missing file: {path}")
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            offset = f.tell()
    except EarlyBirdError:
        raise
    except Exception as exc:  # numpy raises ValueError/EOFError/SyntaxError on junk
        raise EarlyBirdError(f"{path}: not a readable .npy file ({exc})") from None
    if dtype.hasobject:
        raise EarlyBirdError(f"{path}: holds Python objects; expected a numeric array")
    size = path.stat().st_size - offset
    if len(shape) == 0:
        raise EarlyBirdError(f"{path}: holds a scalar; expected an array")
    row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
    available = size // row_bytes if row_bytes else shape[0]
    if available < shape[0]:
        raise EarlyBirdError(
            f"{path}: truncated or corrupt .npy: header says {shape[0]} rows of shape {tuple(shape[1:])} "
            f"but the file holds only {available}"
        )
    return _NpyInfo(path, tuple(shape), dtype, fortran, offset, available)


def _map_rows(info: _NpyInfo, rows: int | None = None) -> np.ndarray:
    """Read-only view of the first ``rows`` rows (all by default), memory-mapped."""
    rows = info.shape[0] if rows is None else rows
    shape = (rows,) + info.shape[1:]
    if info.fortran and rows != info.shape[0]:
        raise EarlyBirdError(f"{info.path}: a Fortran-ordered array cannot be truncated to {rows} rows")
    if rows == 0 or int(np.prod(shape)) == 0:
        return np.empty(shape, dtype=info.dtype)
    mapped = np.memmap(info.path, dtype=info.dtype, mode="r", offset=info.offset, shape=shape,
                       order="F" if info.fortran else "C")
    return np.asarray(mapped)  # a plain ndarray view that keeps the map alive


def _check_finite(array: np.ndarray, path) -> None:
    per = max(1, _SCAN_ELEMENTS // max(1, int(np.prod(array.shape[1:]))))
    for start in range(0, array.shape[0], per):
        part = array[start : start + per]
        if not np.isfinite(part).all():
            bad = start + int(np.argmax(~np.isfinite(part).reshape(part.shape[0], -1).all(axis=1)))
            raise EarlyBirdError(f"{path}: contains NaN or inf (first at row {bad}); expected finite coefficients")


# --------------------------------------------------------------------------- loading


@dataclass
class Records:
    """Recorded coefficients, step-major. ``msa`` (T, L, H) and ``mlp`` (T, L, I) may be None.

    ``total_steps`` is the number of recorded steps T; ``steps`` holds their training-step
    numbers. Arrays from files are read-only memory maps.
    """

    msa: np.ndarray | None
    mlp: np.ndarray | None
    steps: np.ndarray
    meta: dict = field(default_factory=dict)
    path: str | None = None
    layout: str = "earlybird"

    @property
    def total_steps(self) -> int:
        return int(self.steps.shape[0])

    @property
    def blocks(self) -> list:
        return [name for name in BLOCKS if getattr(self, name) is not None]

    @property
    def layers(self) -> int:
        return int(self.block(self.blocks[0]).shape[1])

    def block(self, name: str) -> np.ndarray:
        if name not in BLOCKS:
            raise EarlyBirdError(f"block must be 'msa' or 'mlp'; got {name!r}")
        array = getattr(self, name)
        if array is None:
            where = self.path or "these records"
            raise EarlyBirdError(f"{where} holds no {name} coefficients (blocks present: {', '.join(self.blocks) or 'none'})")
        return array

    def group_size(self, block: str) -> int:
        """Query heads per key/value head of the recorded model (its meta's `model` shape) for `block`'s masks: > 1
        only for the heads of a grouped-query attention (earlybird.masks.compute_mask's `group_size`)."""
        from .masks import head_group_size

        return head_group_size(self.meta.get("model")) if block == "msa" else 1

    def index_of_step(self, step: int) -> int:
        """Row of training step ``step``; EarlyBirdError naming the nearest recorded steps."""
        pos = int(np.searchsorted(self.steps, step))
        if pos < len(self.steps) and int(self.steps[pos]) == step:
            return pos
        if len(self.steps) == 0:
            raise EarlyBirdError(f"step {step} is not recorded: the records are empty")
        near = sorted({int(self.steps[i]) for i in (pos - 1, pos) if 0 <= i < len(self.steps)})
        raise EarlyBirdError(
            f"step {step} is not recorded in {self.path or 'the records'}; nearest recorded: "
            f"{', '.join(map(str, near))} (recorded range {int(self.steps[0])}..{int(self.steps[-1])}, "
            f"{len(self.steps)} steps)"
        )

    @classmethod
    def from_arrays(cls, msa=None, mlp=None, steps=None, meta=None, path=None, layout="earlybird") -> "Records":
        """Validated records from in-memory arrays; steps default to 0..T-1."""
        arrays = {"msa": msa, "mlp": mlp}
        where = path or "records"
        length = None
        for name, array in arrays.items():
            if array is None:
                continue
            array = np.asarray(array)
            if array.ndim != 3:
                raise EarlyBirdError(f"{where}: {name} must be 3-D (steps, layers, {BLOCKS[name].records_key}); got shape {array.shape}")
            if not np.issubdtype(array.dtype, np.floating):
                raise EarlyBirdError(f"{where}: {name} must hold floats; got dtype {array.dtype}")
            _check_finite(array, f"{where} ({name})")
            if length is not None and array.shape[0] != length:
                raise EarlyBirdError(f"{where}: msa has {length} steps but mlp has {array.shape[0]}")
            length = array.shape[0]
            arrays[name] = array
        if arrays["msa"] is None and arrays["mlp"] is None:
            raise EarlyBirdError(f"{where}: holds neither msa nor mlp coefficients")
        if arrays["msa"] is not None and arrays["mlp"] is not None and arrays["msa"].shape[1] != arrays["mlp"].shape[1]:
            raise EarlyBirdError(
                f"{where}: msa has {arrays['msa'].shape[1]} layers but mlp has {arrays['mlp'].shape[1]}"
            )
        if steps is None:
            steps = np.arange(length, dtype=np.int64)
        steps = np.asarray(steps)
        if steps.ndim != 1 or not np.issubdtype(steps.dtype, np.integer):
            raise EarlyBirdError(f"{where}: steps must be a 1-D integer array; got shape {steps.shape}, dtype {steps.dtype}")
        if steps.shape[0] != length:
            raise EarlyBirdError(f"{where}: {length} coefficient rows but {steps.shape[0]} steps")
        if len(steps) > 1 and not (np.diff(steps) > 0).all():
            raise EarlyBirdError(f"{where}: steps must be strictly increasing")
        steps = steps.astype(np.int64, copy=False)
        derived = derived_meta(arrays["msa"], arrays["mlp"])
        full_meta = {**derived, **(meta or {}), "blocks": derived["blocks"]}
        return cls(arrays["msa"], arrays["mlp"], steps, full_meta, None if path is None else str(path), layout)


def derived_meta(msa, mlp) -> dict:
    """What the arrays say about themselves: layers, size per layer of each block, the blocks present. The arrays
    may be one step (L, n) or a stack (T, L, n)."""
    some = msa if msa is not None else mlp
    return {
        "layers": int(some.shape[-2]),
        "heads": None if msa is None else int(msa.shape[-1]),
        "neurons": None if mlp is None else int(mlp.shape[-1]),
        "blocks": [n for n, a in (("msa", msa), ("mlp", mlp)) if a is not None],
    }


def _read_meta(directory: Path) -> dict:
    path = directory / META_FILE
    if not path.exists():
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as exc:
        raise EarlyBirdError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise EarlyBirdError(f"{path}: expected a JSON object")
    return meta


def _committed_rows(directory: Path) -> tuple[dict, int]:
    """Header infos of an earlybird run directory and its committed row count."""
    infos = {}
    for name in BLOCKS:
        if (directory / block_file(name)).exists():
            infos[name] = _read_npy_info(directory / block_file(name))
    if not infos:
        raise EarlyBirdError(f"{directory}: no msa.npy or mlp.npy")
    steps_path = directory / STEPS_FILE
    if not steps_path.exists():
        raise EarlyBirdError(f"missing file: {steps_path} (an earlybird records directory needs it next to "
                             f"{', '.join(f'{n}.npy' for n in infos)})")
    steps_info = _read_npy_info(steps_path)
    if len(steps_info.shape) != 1 or steps_info.dtype.kind not in "iu":
        raise EarlyBirdError(f"{steps_path}: expected a 1-D integer array; got shape {steps_info.shape}, dtype {steps_info.dtype}")
    committed = steps_info.shape[0]
    for name, info in infos.items():
        if len(info.shape) != 3:
            raise EarlyBirdError(f"{info.path}: expected a 3-D array (steps, layers, {BLOCKS[name].records_key}); got shape {info.shape}")
        if info.shape[0] < committed:
            # steps.npy's header is written last, so a block can never lag it legitimately.
            raise EarlyBirdError(
                f"{info.path}: holds {info.shape[0]} steps but {steps_path.name} lists {committed}: "
                "mismatched step counts"
            )
    infos["steps"] = steps_info
    return infos, committed


def _load_earlybird_dir(directory: Path, only: str | None = None) -> Records:
    infos, committed = _committed_rows(directory)
    arrays = {name: _map_rows(infos[name], committed) for name in BLOCKS if name in infos and (only in (None, name))}
    if only is not None and only not in arrays:
        raise EarlyBirdError(f"{directory / block_file(only)}: missing file")
    meta = _read_meta(directory)
    for name, array in arrays.items():
        expected = meta.get(BLOCKS[name].records_key)
        if expected is not None and array.shape[2] != expected:
            raise EarlyBirdError(f"{directory / block_file(name)}: has {array.shape[2]} {BLOCKS[name].records_key} per layer "
                                 f"but meta.json says {expected}")
    steps = _map_rows(infos["steps"], committed)
    return Records.from_arrays(arrays.get("msa"), arrays.get("mlp"), steps, meta, path=str(directory), layout="earlybird")


def _load_original(files: dict, where: Path) -> Records:
    """Original layout: layer-major (L, T, n) arrays, steps 0..T-1."""
    arrays, layouts = {}, set()
    for name, path in files.items():
        info = _read_npy_info(path)
        if len(info.shape) != 3:
            raise EarlyBirdError(f"{path}: expected a 3-D layer-major array (layers, steps, {BLOCKS[name].records_key}); "
                                 f"got shape {info.shape}")
        arrays[name] = _map_rows(info).transpose(1, 0, 2)
        layouts.add(ORIGINAL_FILES[path.name][1])
    lengths = {name: a.shape[0] for name, a in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise EarlyBirdError(f"{where}: mismatched step counts: " + ", ".join(f"{files[n].name} has {t}" for n, t in lengths.items()))
    layout = layouts.pop()
    meta = {"layout": layout, "every": 1, "steps_note": "original layout has no steps file; steps are 0..T-1"}
    return Records.from_arrays(arrays.get("msa"), arrays.get("mlp"), None, meta, path=str(where), layout=layout)


def load_records(path) -> Records:
    """Load records from a run directory or one ``.npy`` file, in our layout or the original one.

    A directory holds either ``msa.npy``/``mlp.npy`` + ``steps.npy`` (+ ``meta.json``), or the
    research code's ``self_slimming_coef_records.npy``/``inter_slimming_coef_records.npy``
    (finetuning) or ``msa_slimming_coefs.npy``/``mlp_slimming_coefs.npy`` (pretraining). A
    single file loads that one block, inferred from its name.
    """
    path = Path(path)
    if not path.exists():
        raise EarlyBirdError(f"missing file or directory: {path}")
    if path.is_dir():
        if any((path / block_file(name)).exists() for name in BLOCKS):
            return _load_earlybird_dir(path)
        found = {n: path / n for n in ORIGINAL_FILES if (path / n).exists()}
        if found:
            by_layout = {}
            for n, p in found.items():
                by_layout.setdefault(ORIGINAL_FILES[n][1], {})[ORIGINAL_FILES[n][0]] = p
            if len(by_layout) > 1:
                raise EarlyBirdError(f"{path}: holds both finetuning and pretraining record files; point at one file")
            return _load_original(next(iter(by_layout.values())), path)
        raise EarlyBirdError(
            f"{path}: not a records directory: expected msa.npy/mlp.npy with steps.npy, or "
            + ", ".join(ORIGINAL_FILES)
        )
    name = path.name
    if name in ORIGINAL_FILES:
        return _load_original({ORIGINAL_FILES[name][0]: path}, path)
    block = name[: -len(".npy")] if name.endswith(".npy") else None
    if block in BLOCKS:
        if (path.parent / STEPS_FILE).exists():
            return _load_earlybird_dir(path.parent, only=block)
        info = _read_npy_info(path)
        if len(info.shape) != 3:
            raise EarlyBirdError(f"{path}: expected a 3-D array (steps, layers, {BLOCKS[block].records_key}); got shape {info.shape}")
        kwargs = {block: _map_rows(info)}
        return Records.from_arrays(**kwargs, meta={"steps_note": "no steps.npy; steps are 0..T-1"}, path=str(path))
    raise EarlyBirdError(
        f"{path}: cannot tell which block this file holds; expected a directory or a file named "
        f"msa.npy, mlp.npy or one of {', '.join(ORIGINAL_FILES)}"
    )


# --------------------------------------------------------------------------- recording


class _AppendableNpy:
    """One growing .npy file: rows are appended after the committed ones, header rewritten in place."""

    def __init__(self, path: Path, dtype: np.dtype, row_shape: tuple, rows: int, create: bool, fsync: bool):
        self.path = path
        self.dtype = np.dtype(dtype)
        self.row_shape = tuple(row_shape)
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        self.rows = rows
        self.fsync = fsync
        if create:
            with open(path, "wb") as f:
                f.write(_npy_header(self.dtype, (0,) + self.row_shape))
                self._sync(f)
        self.file = open(path, "r+b")
        # Drop anything beyond the committed rows (a previous kill mid-append), then make the
        # header agree with the committed count.
        self.file.truncate(HEADER_BYTES + rows * self.row_bytes)
        self.write_header()

    def _sync(self, f) -> None:
        f.flush()
        if self.fsync:
            os.fsync(f.fileno())

    def append(self, data: np.ndarray) -> None:
        """Write rows after the committed ones; not visible until write_header()."""
        try:
            self.file.seek(HEADER_BYTES + self.rows * self.row_bytes)
            self.file.write(np.ascontiguousarray(data, dtype=self.dtype).tobytes())
            self._sync(self.file)
        except OSError as err:
            raise named(err, self.path) from None
        self.rows += data.shape[0]

    def write_header(self) -> None:
        try:
            self.file.seek(0)
            self.file.write(_npy_header(self.dtype, (self.rows,) + self.row_shape))
            self._sync(self.file)
        except OSError as err:
            raise named(err, self.path) from None

    def close(self) -> None:
        self.file.close()


class CoefficientRecorder:
    """Append every (or every ``every``-th) step's slimming coefficients to a run directory.

    ``record(step, msa, mlp)`` copies the (L, H) / (L, I) tensors into a preallocated buffer
    of ``chunk`` rows on their own device (no host sync); when the buffer is full it moves
    to the host once and is appended to the files (see the module docstring). Memory is
    fixed and a step's cost does not depend on how many came before.

    Steps must increase: a step <= the last recorded one is ignored (``record`` returns False,
    one warning is issued), so a run resumed from an earlier checkpoint adds no duplicates.
    Call ``flush()`` when saving a checkpoint so the records cover it and a resumed run has no
    gap. With ``is_main_process=False`` every method is a no-op and nothing is written.

    ``listener(steps, blocks)``, if given, is called after each flush has committed its rows, with the steps
    (int64 (n,)) and the host arrays it wrote ({block: (n, L, k)}): what is computed from the records while training
    (e.g. the trackers' summaries, earlybird.training.trackers) costs no transfer of its own. The arrays are valid
    during the call only (on the CPU they are views of the recorder's buffer, which the next rows overwrite).
    """

    def __init__(self, run_dir, *, every: int = 1, chunk: int = 256, meta: dict | None = None,
                 is_main_process: bool = True, device=None, dtype: str = "float32", resume: bool = False,
                 fsync: bool = True, listener=None):
        if int(every) < 1 or int(chunk) < 1:
            raise EarlyBirdError(f"every and chunk must be >= 1; got every={every}, chunk={chunk}")
        if np.dtype(dtype) not in (np.dtype("float32"), np.dtype("float16"), np.dtype("float64")):
            raise EarlyBirdError(f"dtype must be float16, float32 or float64; got {dtype!r}")
        self.run_dir = Path(run_dir)
        self.every = int(every)
        self.chunk = int(chunk)
        self.user_meta = dict(meta or {})
        self.active = bool(is_main_process)
        self.device = device
        self.dtype = np.dtype(dtype)
        self.fsync = fsync
        self.listener = listener
        self.committed = 0  # rows on disk
        self.pending = 0  # rows in the buffer
        self.last_step = -math.inf
        self.ignored = 0
        self._shapes: dict | None = None  # block -> (L, n), fixed by the first record
        self._buffers: dict = {}
        self._files: dict = {}
        self._steps_buffer = np.zeros(self.chunk, dtype=np.int64)
        self._closed = False
        self._failed: OSError | None = None
        self._resumed_from = None
        if not self.active:
            return
        if any((self.run_dir / block_file(n)).exists() for n in BLOCKS) or (self.run_dir / STEPS_FILE).exists():
            if not resume:
                raise EarlyBirdError(f"{self.run_dir} already holds records; pass resume=True to append to them "
                                     "or choose another directory")
            self._open_existing()

    # -- setup ------------------------------------------------------------------------

    def _open_existing(self) -> None:
        infos, committed = _committed_rows(self.run_dir)
        meta = _read_meta(self.run_dir)
        if meta.get("every", self.every) != self.every:
            raise EarlyBirdError(f"{self.run_dir}: recorded with every={meta['every']}; cannot resume with every={self.every}")
        self.user_meta = {**{k: v for k, v in meta.items() if k not in _RESERVED_META}, **self.user_meta}
        for info in infos.values():
            if info.offset != HEADER_BYTES or info.fortran:
                raise EarlyBirdError(f"{info.path}: not written by CoefficientRecorder (its header is not the "
                                     f"fixed {HEADER_BYTES} bytes); cannot append to it")
        self._shapes = {name: tuple(infos[name].shape[1:]) for name in BLOCKS if name in infos}
        self.dtype = infos[next(iter(self._shapes))].dtype
        for name, shape in self._shapes.items():
            self._files[name] = _AppendableNpy(infos[name].path, self.dtype, shape, committed, False, self.fsync)
        self._files["steps"] = _AppendableNpy(infos["steps"].path, np.int64, (), committed, False, self.fsync)
        self.committed = committed
        if committed:
            self.last_step = int(_map_rows(infos["steps"], committed)[-1])
            self._resumed_from = self.last_step

    def _meta(self) -> dict:
        shapes = self._shapes or {}
        some = next(iter(shapes.values()), (None,))
        return {
            "model_type": None,  # filled from the caller's meta when given
            "flags": {},
            **self.user_meta,
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "layers": some[0],
            "heads": shapes["msa"][1] if "msa" in shapes else None,
            "neurons": shapes["mlp"][1] if "mlp" in shapes else None,
            "blocks": list(shapes),
            "every": self.every,
            "dtype": self.dtype.name,
            "chunk": self.chunk,
        }

    def _start(self, tensors: dict) -> None:
        self._shapes = {name: tuple(t.shape) for name, t in tensors.items()}
        layers = {s[0] for s in self._shapes.values()}
        if len(layers) > 1:
            raise EarlyBirdError(f"msa and mlp coefficients have different layer counts: {self._shapes}")

    def _allocate(self, tensors: dict) -> None:
        import torch

        torch_dtype = {"float16": torch.float16, "float32": torch.float32, "float64": torch.float64}[self.dtype.name]
        for name, t in tensors.items():
            device = self.device if self.device is not None else t.device
            self._buffers[name] = torch.empty((self.chunk,) + self._shapes[name], dtype=torch_dtype, device=device)

    def _create_files(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self._meta(), self.run_dir / META_FILE)
        for name, shape in self._shapes.items():
            self._files[name] = _AppendableNpy(self.run_dir / block_file(name), self.dtype, shape, 0, True, self.fsync)
        self._files["steps"] = _AppendableNpy(self.run_dir / STEPS_FILE, np.int64, (), 0, True, self.fsync)
        fsync_dir(self.run_dir)

    # -- public API ---------------------------------------------------------------------

    def record(self, step: int, msa=None, mlp=None) -> bool:
        """Buffer one step's coefficients; True if recorded (False: skipped or ignored).

        ``step`` should be a Python int (a device scalar would force a sync).
        """
        if not self.active:
            return False
        if self._closed:
            raise EarlyBirdError("record() called on a closed CoefficientRecorder")
        step = int(step)
        if step <= self.last_step:
            self.ignored += 1
            if self.ignored == 1:
                warnings.warn(f"CoefficientRecorder: ignoring step {step} <= last recorded step {self.last_step} "
                              "(records have no duplicates)", stacklevel=2)
            return False
        if step % self.every:
            return False
        tensors = {name: t for name, t in (("msa", msa), ("mlp", mlp)) if t is not None}
        tensors = {name: _as_tensor(t) for name, t in tensors.items()}
        if not tensors:
            raise EarlyBirdError("record() needs msa and/or mlp coefficients")
        if self._shapes is None:
            self._start(tensors)
        if set(tensors) != set(self._shapes):
            raise EarlyBirdError(f"record(): got blocks {sorted(tensors)} but this run records {sorted(self._shapes)}")
        for name, t in tensors.items():
            if tuple(t.shape) != self._shapes[name]:
                raise EarlyBirdError(f"record(): {name} has shape {tuple(t.shape)}; this run records {self._shapes[name]}")
        if not self._buffers:
            self._allocate(tensors)
        if self._resumed_from is not None and step > self._resumed_from + self.every:
            warnings.warn(f"CoefficientRecorder: resumed after step {self._resumed_from} but the next step is {step}: "
                          "the records have a gap (flush the recorder when saving checkpoints)", stacklevel=2)
        self._resumed_from = None
        row = self.pending
        for name, t in tensors.items():
            self._buffers[name][row].copy_(t.detach())
        self._steps_buffer[row] = step
        self.pending += 1
        self.last_step = step
        if self.pending == self.chunk:
            self.flush()
        return True

    def flush(self) -> None:
        """Append the buffered rows to disk and commit them (one host transfer per block)."""
        if not self.active or self.pending == 0:
            return
        if self._failed is not None:
            raise self._failed  # a failed flush leaves the files as the last good one did: write nothing more
        n = self.pending
        host = {name: buf[:n].cpu().numpy() for name, buf in self._buffers.items()}
        try:
            if not self._files:
                self._create_files()
            for name, data in host.items():
                self._files[name].append(data)
            self._files["steps"].append(self._steps_buffer[:n])
            faults.hit("records-append", self._files["steps"].path)
            # Commit: block headers first, steps.npy last -- its row count marks what is valid.
            for name in host:
                self._files[name].write_header()
            faults.hit("records-commit", self._files["steps"].path)
            self._files["steps"].write_header()
        except OSError as err:
            # Disk full, read-only... : the committed rows are untouched (steps.npy's header was not rewritten).
            self._failed = named(err, self.run_dir)
            raise self._failed from None
        self.committed += n
        self.pending = 0
        if self.listener is not None:
            self.listener(self._steps_buffer[:n].copy(), host)

    def close(self) -> None:
        """Flush, finalise meta.json and close the files. Safe to call twice."""
        if not self.active or self._closed:
            return
        if self._failed is not None:  # keep the files as the last good flush left them
            for f in self._files.values():
                f.close()
            self._closed = True
            return
        self.flush()
        if self._files:
            write_json_atomic(self._meta(), self.run_dir / META_FILE)
        for f in self._files.values():
            f.close()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    @property
    def steps_recorded(self) -> int:
        """Rows recorded so far, committed or buffered."""
        return self.committed + self.pending


_RESERVED_META = {"format", "format_version", "layers", "heads", "neurons", "blocks", "every", "dtype", "chunk"}


def _as_tensor(value):
    import torch

    if isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(np.asarray(value))
