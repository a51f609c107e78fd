"""Pruning plans: which heads and intermediate neurons of which layer to prune, as JSON.

A plan is computed from the mask at one recorded step (:func:`earlybird.masks.compute_mask`)
and lists the *pruned* indices in the model's original numbering:

    {"pruned_heads": {"0": [3, 7], ...}, "pruned_intermediate": {"0": [...], ...},
     "shape": {"layers": L, "heads": H, "intermediate": I},
     "provenance": {"records": ..., "step": S, "self_ratio": ..., "inter_ratio": ...,
                    "self_scope": ..., "inter_scope": ..., "random_seed": ..., "model": {...}}}

Every layer of a block present in the plan has a key (an empty list when nothing is pruned).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np

from .errors import EarlyBirdError
from .masks import check_ratio, check_scope, compute_mask
from .records import Records, _fsync_dir, load_records

PLAN_KEYS = {"pruned_heads": ("msa", "heads"), "pruned_intermediate": ("mlp", "intermediate")}


def _pruned_lists(kept: np.ndarray) -> dict:
    return {str(layer): [int(i) for i in np.flatnonzero(~row)] for layer, row in enumerate(kept)}


def _random_like(kept: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random mask with the same number pruned in each layer as ``kept``."""
    out = np.ones_like(kept)
    for layer, row in enumerate(kept):
        count = int((~row).sum())
        out[layer, rng.choice(row.size, size=count, replace=False)] = False
    return out


def make_plan(records, step: int, self_ratio: float, inter_ratio: float, self_scope: str = "layerwise",
              inter_scope: str = "layerwise", random_seed: int | None = None) -> dict:
    """The plan for the masks at recorded training step ``step``.

    ``random_seed`` gives the random baseline: per layer the same number pruned as the real
    mask at that step, chosen with ``numpy.random.default_rng(random_seed)`` (heads first,
    then neurons, layer by layer). A ratio of 0 gives empty lists; a ratio > 0 for a block
    the records lack is an error.
    """
    records = records if isinstance(records, Records) else load_records(records)
    ratios = {"msa": check_ratio(self_ratio), "mlp": check_ratio(inter_ratio)}
    scopes = {"msa": check_scope(self_scope), "mlp": check_scope(inter_scope)}
    try:
        step = int(step)
    except (TypeError, ValueError):
        raise EarlyBirdError(f"step must be an integer; got {step!r}") from None
    row = records.index_of_step(step)
    rng = None if random_seed is None else np.random.default_rng(random_seed)
    plan = {"pruned_heads": {}, "pruned_intermediate": {}}
    for key, (block, _) in PLAN_KEYS.items():
        coefs = getattr(records, block)
        if coefs is None:
            if ratios[block] > 0:
                raise EarlyBirdError(f"{records.path or 'the records'} holds no {block} coefficients but its ratio is "
                                     f"{ratios[block]}; use 0 for a block that was not recorded")
            continue
        kept = compute_mask(coefs[row], ratios[block], scopes[block])
        if rng is not None:
            kept = _random_like(kept, rng)
        plan[key] = _pruned_lists(kept)
    meta = records.meta
    plan["shape"] = {
        "layers": records.layers,
        "heads": None if records.msa is None else int(records.msa.shape[2]),
        "intermediate": None if records.mlp is None else int(records.mlp.shape[2]),
    }
    plan["provenance"] = {
        "records": None if records.path is None else str(Path(records.path).resolve()),
        "step": step,
        "self_ratio": ratios["msa"],
        "inter_ratio": ratios["mlp"],
        "self_scope": scopes["msa"],
        "inter_scope": scopes["mlp"],
        "random_seed": random_seed,
        "model": {k: v for k, v in meta.items() if k not in ("blocks",)},
    }
    return plan


def format_plan(plan: dict) -> str:
    """Indented JSON with each layer's index list on one line."""
    text = json.dumps(plan, indent=2)
    one_line = lambda m: "[" + ", ".join(part.strip() for part in m.group(1).split(",")) + "]"
    return re.sub(r"\[\s*\n\s*((?:-?\d+,\s*\n\s*)*-?\d+)\s*\n\s*\]", one_line, text) + "\n"


def save_plan(plan: dict, path) -> None:
    """Validate and write atomically: temporary file, fsync, rename."""
    validate_plan(plan, where=str(path))
    path = Path(path)
    if not path.parent.is_dir():
        raise EarlyBirdError(f"cannot write {path}: directory {path.parent} does not exist")
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(format_plan(plan))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise EarlyBirdError(f"cannot write {path}: {exc.strerror or exc}") from None
    _fsync_dir(path.parent)


def load_plan(path) -> dict:
    """Read and validate a plan file; EarlyBirdError with the reason if it is not valid."""
    path = Path(path)
    if not path.is_file():
        raise EarlyBirdError(f"missing plan file: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            plan = json.load(f, object_pairs_hook=_no_duplicate_keys)
    except _DuplicateKey as exc:
        raise EarlyBirdError(f"{path}: {exc}; expected each key (e.g. each layer) once") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise EarlyBirdError(f"{path}: not readable JSON ({exc})") from None
    validate_plan(plan, where=str(path))
    return plan


class _DuplicateKey(Exception):
    pass


def _no_duplicate_keys(pairs) -> dict:
    """json's object_pairs_hook: plain json.load keeps the last of two equal keys, silently dropping a layer."""
    seen = {}
    for key, value in pairs:
        if key in seen:
            raise _DuplicateKey(f"duplicate key {key!r} in a JSON object")
        seen[key] = value
    return seen


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_plan(plan, where: str = "plan") -> None:
    """Layer keys are ints in range; indices are ints in range, unique, and never a whole layer."""
    if not isinstance(plan, dict):
        raise EarlyBirdError(f"{where}: a plan must be a JSON object")
    shape = plan.get("shape")
    if not isinstance(shape, dict) or not _is_int(shape.get("layers")) or shape["layers"] < 1:
        raise EarlyBirdError(f"{where}: missing or bad 'shape' (expected {{'layers': L, 'heads': H, 'intermediate': I}})")
    layers = shape["layers"]
    for key, (_, size_key) in PLAN_KEYS.items():
        if key not in plan:
            raise EarlyBirdError(f"{where}: missing '{key}'")
        entries = plan[key]
        if not isinstance(entries, dict):
            raise EarlyBirdError(f"{where}: '{key}' must map layer numbers to lists of indices")
        if not entries:
            continue
        size = shape.get(size_key)
        if not _is_int(size) or size < 1:
            raise EarlyBirdError(f"{where}: '{key}' is not empty but shape['{size_key}'] is {size!r}")
        for layer_key, indices in entries.items():
            try:
                layer = int(layer_key)
            except (TypeError, ValueError):
                raise EarlyBirdError(f"{where}: '{key}' has layer key {layer_key!r}; expected an integer") from None
            if str(layer) != str(layer_key).strip() or not 0 <= layer < layers:
                raise EarlyBirdError(f"{where}: '{key}' has layer key {layer_key!r}; expected an integer in 0..{layers - 1}")
            if not isinstance(indices, list) or not all(_is_int(i) for i in indices):
                raise EarlyBirdError(f"{where}: '{key}'['{layer_key}'] must be a list of integers")
            bad = [i for i in indices if not 0 <= i < size]
            if bad:
                raise EarlyBirdError(f"{where}: '{key}'['{layer_key}'] has index {bad[0]} outside 0..{size - 1}")
            if len(set(indices)) != len(indices):
                raise EarlyBirdError(f"{where}: '{key}'['{layer_key}'] lists an index twice")
            if len(indices) == size:
                raise EarlyBirdError(f"{where}: '{key}'['{layer_key}'] prunes all {size} {size_key} of layer {layer}; "
                                     "at least one must be kept")
