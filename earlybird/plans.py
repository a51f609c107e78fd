"""Pruning plans: which heads and intermediate neurons of which layer to prune, as JSON.

A plan is computed from the mask at one recorded step (:func:`earlybird.masks.compute_mask`)
and lists the *pruned* indices in the model's original numbering:

    {"pruned_heads": {"0": [3, 7], ...}, "pruned_intermediate": {"0": [...], ...},
     "shape": {"layers": L, "heads": H, "intermediate": I[, "kv_heads": K]},
     "provenance": {"records": ..., "step": S, "self_ratio": ..., "inter_ratio": ...,
                    "self_scope": ..., "inter_scope": ..., "random_seed": ..., "profile": ...,
                    "gqa_rule": ..., "round_to": N, "model": {...}}}

The mask rule and the default scopes are the detection profile's (earlybird.profiles; default ``paper``).
A decoder with grouped-query attention (Llama, Qwen3) has ``kv_heads`` in its shape: its head lists keep THE GQA
RULE (earlybird.masks: in each layer every KV group keeps 0 or the same number of query heads), which
``validate_plan`` checks; ``gqa_rule`` says how the masks chose (``per-group`` or ``groups``).

Every layer of a block present in the plan has a key (an empty list when nothing is pruned).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from .blocks import BLOCKS
from .errors import EarlyBirdError
from .fileio import write_text_atomic
from .masks import (DEFAULT_GQA_RULE, check_gqa_rule, check_ratio, check_round_to, check_scope, compute_mask,
                    gqa_violation, head_group_size)
from .profiles import get_profile
from .records import Records, load_records


def _pruned_lists(kept: np.ndarray) -> dict:
    return {str(layer): [int(i) for i in np.flatnonzero(~row)] for layer, row in enumerate(kept)}


def _random_like(kept: np.ndarray, rng: np.random.Generator, group_size: int = 1) -> np.ndarray:
    """A random mask with the same number pruned in each layer as ``kept``; under grouped-query attention the same
    number of query heads per KV group as ``kept`` (random groups, random heads in them), so it keeps the GQA rule."""
    out = np.ones_like(kept)
    for layer, row in enumerate(kept):
        if group_size > 1:
            per_group = row.reshape(-1, group_size).sum(axis=1)
            for group, count in zip(rng.permutation(len(per_group)), np.sort(per_group)[::-1]):
                drop = group * group_size + rng.choice(group_size, size=group_size - int(count), replace=False)
                out[layer, drop] = False
            continue
        count = int((~row).sum())
        out[layer, rng.choice(row.size, size=count, replace=False)] = False
    return out


def make_plan(records, step: int, self_ratio: float, inter_ratio: float, self_scope: str | None = None,
              inter_scope: str | None = None, random_seed: int | None = None, profile: str | None = None,
              gqa_rule: str = DEFAULT_GQA_RULE, round_to: int = 1) -> dict:
    """The plan for the masks at recorded training step ``step`` (see :func:`plan_from_coefficients`)."""
    records = records if isinstance(records, Records) else load_records(records)
    try:
        step = int(step)
    except (TypeError, ValueError):
        raise EarlyBirdError(f"step must be an integer; got {step!r}") from None
    row = records.index_of_step(step)
    coefficients = {name: None if getattr(records, name) is None else getattr(records, name)[row] for name in BLOCKS}
    source = None if records.path is None else str(Path(records.path).resolve())
    return plan_from_coefficients(coefficients, step, {"msa": self_ratio, "mlp": inter_ratio},
                                  {"msa": self_scope, "mlp": inter_scope}, random_seed=random_seed, source=source,
                                  layers=records.layers, meta=records.meta, where=records.path or "the records",
                                  profile=profile, gqa_rule=gqa_rule, round_to=round_to)


def plan_from_coefficients(coefficients: dict, step: int, ratios: dict, scopes: dict, *, random_seed=None,
                           source: str | None = None, layers: int | None = None, meta: dict | None = None,
                           where: str = "the coefficients", profile: str | None = None,
                           gqa_rule: str = DEFAULT_GQA_RULE, round_to: int = 1) -> dict:
    """The plan for one step's coefficients {"msa": (L, H) or None, "mlp": (L, I) or None}.

    ``ratios`` and ``scopes`` are per block (a scope None: the profile's default); ``profile`` gives the mask
    rule. A rule that prunes a whole layer (the original profile's, on equal coefficients) gives a plan that
    `save_plan` and the model refuse, naming the layer. ``random_seed`` gives the random baseline: per layer the same number
    pruned as the real mask, chosen with ``numpy.random.default_rng(random_seed)`` (heads first, then neurons, layer
    by layer). A ratio of 0 gives empty lists; a ratio > 0 for a block without coefficients is an error.
    ``source`` (the records' path) and ``meta`` (the records' meta) go into the provenance. The heads' KV groups
    come from ``meta["model"]`` (its ``kv_heads``, see slimming.model_shape): their masks keep the GQA rule under
    ``gqa_rule``; ``round_to`` rounds each layer's kept width up to a multiple (earlybird.masks).
    """
    profile = get_profile(profile)
    gqa_rule = check_gqa_rule(gqa_rule)
    round_to = check_round_to(round_to)
    model = (meta or {}).get("model") or {}
    group_size = head_group_size(model)
    ratios = {name: check_ratio(ratios[name]) for name in BLOCKS}
    scopes = {name: check_scope(profile.scope(name, scopes.get(name))) for name in BLOCKS}
    rng = None if random_seed is None else np.random.default_rng(random_seed)
    plan = {block.plan_key: {} for block in BLOCKS.values()}
    shape = {"layers": layers}
    for name, block in BLOCKS.items():
        coefs = coefficients.get(name)
        shape[block.shape_key] = None if coefs is None else int(np.shape(coefs)[-1])
        if coefs is None:
            if ratios[name] > 0:
                raise EarlyBirdError(f"{where} holds no {name} coefficients but its ratio is {ratios[name]}; use 0 "
                                     "for a block that was not recorded")
            continue
        shape["layers"] = int(np.shape(coefs)[0])
        groups = group_size if name == "msa" else 1
        kept = compute_mask(coefs, ratios[name], scopes[name], profile.mask_rule, group_size=groups,
                            gqa_rule=gqa_rule, round_to=round_to)
        if rng is not None:
            kept = _random_like(kept, rng, groups)
        plan[block.plan_key] = _pruned_lists(kept)
    if group_size > 1:
        shape["kv_heads"] = int(model["kv_heads"])
    plan["shape"] = shape
    plan["provenance"] = {
        "records": source,
        "step": int(step),
        "self_ratio": ratios["msa"],
        "inter_ratio": ratios["mlp"],
        "self_scope": scopes["msa"],
        "inter_scope": scopes["mlp"],
        "random_seed": random_seed,
        "profile": profile.name,
        "gqa_rule": gqa_rule if group_size > 1 else None,
        "round_to": round_to,
        "model": {k: v for k, v in (meta or {}).items() if k not in ("blocks",)},
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
    try:
        write_text_atomic(format_plan(plan), path)
    except OSError as exc:
        raise EarlyBirdError(f"cannot write {path}: {exc.strerror or exc}") from None


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
    """Layer keys are ints in range; indices are ints in range, unique, and never a whole layer; under grouped-query
    attention (``shape["kv_heads"]``) the heads of each layer keep the GQA rule (earlybird.masks).

    The one check of a plan's structure: plan files (load_plan, save_plan) and models (slimming.check_plan_fits,
    which first makes the plan's shape the model's) both go through it.
    """
    if not isinstance(plan, dict):
        raise EarlyBirdError(f"{where}: a plan must be a JSON object")
    shape = plan.get("shape")
    if not isinstance(shape, dict) or not _is_int(shape.get("layers")) or shape["layers"] < 1:
        raise EarlyBirdError(f"{where}: missing or bad 'shape' (expected {{'layers': L, 'heads': H, 'intermediate': I}})")
    layers = shape["layers"]
    kv_heads = shape.get("kv_heads")
    if kv_heads is not None and (not _is_int(kv_heads) or kv_heads < 1 or not _is_int(shape.get("heads"))
                                 or shape["heads"] % kv_heads):
        raise EarlyBirdError(f"{where}: shape['kv_heads'] is {kv_heads!r}; expected a positive divisor of "
                             f"shape['heads'] ({shape.get('heads')!r})")
    group_size = head_group_size(shape)
    for block in BLOCKS.values():
        key, size_key = block.plan_key, block.shape_key
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
                raise EarlyBirdError(f"{where}: '{key}' has layer key {layer_key!r}; expected an integer in "
                                     f"0..{layers - 1} (there is no layer {layer})")
            if not isinstance(indices, list) or not all(_is_int(i) for i in indices):
                raise EarlyBirdError(f"{where}: '{key}'['{layer_key}'] holds {indices!r}; a plan maps layer numbers "
                                     "to lists of integers")
            bad = [i for i in indices if not 0 <= i < size]
            if bad:
                raise EarlyBirdError(f"{where}: '{key}'['{layer_key}'] has index {bad[0]} outside 0..{size - 1}")
            if len(set(indices)) != len(indices):
                raise EarlyBirdError(f"{where}: '{key}'['{layer_key}'] lists an index twice")
            if len(indices) == size:
                raise EarlyBirdError(f"{where}: '{key}'['{layer_key}'] prunes all {size} {block.units} of layer "
                                     f"{layer}; at least one must remain")
            if block.name == "msa":
                problem = gqa_violation(indices, size, group_size)
                if problem:
                    raise EarlyBirdError(f"{where}: layer {layer} {problem} ('{key}'['{layer_key}'] of {size} heads "
                                         f"over {shape['kv_heads']} key/value heads: a GQA-aware plan)")
