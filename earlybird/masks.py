"""Pruning masks from slimming coefficients: the single place masks are computed.

Every detector, plot and pruning path calls :func:`compute_mask`, so "the mask at step
t" means the same thing everywhere.

Two rules (``rule=``, documented in docs/library.md; a detection profile names one, see earlybird.profiles).
``True`` in a mask means *kept* under both.

``magnitude`` (the ``paper`` profile):

* importance is ``|coefficient|``;
* the number pruned is Python's ``round(ratio * n)`` (half to even: 0.5 * 5 -> 2);
* ``layerwise``: each layer prunes exactly ``round(ratio * n)`` of its own smallest, capped
  at ``n - 1`` because a model refuses to prune every head of a layer;
* ``global``: ``round(ratio * L * n)`` smallest over all layers at once, but the largest of
  each layer is always kept (so the count is capped at ``L * (n - 1)``);
* ties break deterministically: among equal importances the lowest index is pruned first
  (for ``global`` the index is the flattened layer-major one: layer 0 before layer 1).
  Consequently the entry a layer protects under ``global`` is its largest with the highest
  index among equal maxima.

``quantile`` (the ``original`` profile, the original research code's rule):

* importance is the *signed* coefficient;
* the threshold is numpy's default (linear-interpolation) ``np.quantile`` at the ratio, per layer
  (``layerwise``) or over all entries of the step (``global``), and every entry ``<=`` it is pruned:
  ties at the threshold all go, and with distinct values ``floor(ratio * (n - 1)) + 1`` entries go;
* nothing protects a layer: equal coefficients (e.g. before training moves them) prune it whole,
  which detection accepts and a pruning plan refuses;
* ``ratio == 0`` keeps everything, as under ``magnitude`` (the bare quantile rule would prune each
  layer's minimum: in this project a ratio of 0 always means "do not prune").
"""

from __future__ import annotations

import numpy as np

from .errors import EarlyBirdError

SCOPES = ("layerwise", "global")
MASK_RULES = ("magnitude", "quantile")

# Elements per block when a batch is processed in pieces: bounds temporaries (partition
# copy, int32 cumsum, float64 SVD input) to a few tens of MB whatever the batch size.
_BLOCK_ELEMENTS = 1 << 22


def as_numpy(coefs) -> np.ndarray:
    """Accept numpy arrays, lists and torch tensors (any device) without importing torch."""
    if hasattr(coefs, "detach") and hasattr(coefs, "cpu"):
        coefs = coefs.detach().cpu()
        if str(coefs.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            coefs = coefs.float()
        coefs = coefs.numpy()
    return np.asarray(coefs)


def check_ratio(ratio) -> float:
    """Return ``ratio`` as a float if it lies in [0, 1), else raise EarlyBirdError."""
    try:
        value = float(ratio)
    except (TypeError, ValueError):
        raise EarlyBirdError(f"pruning ratio must be a number in [0, 1), got {ratio!r}") from None
    if not (0.0 <= value < 1.0):
        raise EarlyBirdError(f"pruning ratio must be in [0, 1), got {ratio!r}")
    return value


def check_scope(scope: str) -> str:
    if scope not in SCOPES:
        raise EarlyBirdError(f"scope must be one of {', '.join(SCOPES)}; got {scope!r}")
    return scope


def check_rule(rule: str) -> str:
    if rule not in MASK_RULES:
        raise EarlyBirdError(f"mask rule must be one of {', '.join(MASK_RULES)}; got {rule!r}")
    return rule


def n_pruned(ratio: float, n: int) -> int:
    """How many of ``n`` entries a ratio prunes, before the keep-one-per-layer cap."""
    return int(round(check_ratio(ratio) * n))


def _prune_k_smallest(rows: np.ndarray, k: int, period: int = 1) -> np.ndarray:
    """Boolean (R, n): True for the k smallest of each row, lowest index first among ties.

    O(n) per row: the k-th smallest value comes from :func:`_kth_smallest`; everything up to it is
    pruned, and in a row with more than k such entries (ties at the k-th value) only the first
    (lowest-index) entries equal to it fill the quota left by those strictly below. Same result as a
    stable argsort, without the sort. ``period``: rows per step when consecutive steps are stacked
    (see :func:`_kth_smallest`); any value gives the same result.
    """
    kth = _kth_smallest(rows, k, period)[:, None]
    pruned = rows <= kth
    # Only rows with more entries equal to the k-th value than the quota need the
    # lowest-index selection (the cumulative count); with distinct values that is none.
    tied = np.flatnonzero(np.count_nonzero(pruned, axis=1) > k)
    if tied.size:
        below = rows[tied] < kth[tied]
        equal = pruned[tied] & ~below
        quota = k - np.count_nonzero(below, axis=1)
        pruned[tied] = below | (equal & (np.cumsum(equal, axis=1, dtype=np.int32) <= quota[:, None]))
    return pruned


# Every _ANCHOR_STRIDE-th step of a stack is partitioned in full; see _kth_smallest.
_ANCHOR_STRIDE = 8
# Bracket margin, in median absolute second differences of the anchors' values (their noise without the trend):
# 2 leaves ~1% of the rows of a synthetic BERT-base run (bench/detector_cost.py) outside, partitioned in full.
_MARGIN = 2.0


def _kth_smallest(rows: np.ndarray, k: int, period: int = 1) -> np.ndarray:
    """The k-th smallest value (1-based) of each row of (R, n): exactly ``np.partition(rows, k - 1, axis=1)[:, k - 1]``.

    Hand-written because the partition of the widest block (12 x 3072 per step) was most of an offline scan, and
    neither numpy nor torch selects faster (measured: torch.kthvalue / topk on two threads were 2x slower than
    np.partition). What makes it faster is that the rows are a stack of consecutive training steps
    (``period`` rows per step, row ``s * period + j`` being entry ``j`` of step ``s``), whose coefficients
    barely move from one step to the next: only every ``_ANCHOR_STRIDE``-th step (and the last) is partitioned;
    a step between two such anchors gets a bracket [lo, hi] around the anchors' values (widened by their noise),
    which one comparison per entry checks (fewer than k entries below lo, at least k at most hi), and its k-th
    value is then picked among the few entries inside the bracket. It is always an element of the row with
    exactly the partition's rank, so the result is the partition's; a row whose bracket fails (or holds too many
    entries) is partitioned in full.
    """
    steps, n = len(rows) // max(period, 1), rows.shape[1]
    if period < 1 or steps * period != len(rows) or steps < 2 * _ANCHOR_STRIDE or n < 64:
        return np.partition(rows, k - 1, axis=1)[:, k - 1]
    grid = rows.reshape(steps, period, n)
    anchors = np.unique(np.r_[np.arange(0, steps, _ANCHOR_STRIDE), steps - 1])
    at_anchor = np.partition(grid[anchors], k - 1, axis=2)[:, :, k - 1]
    place = np.clip(np.searchsorted(anchors, np.arange(steps)), 1, len(anchors) - 1)
    before, after = at_anchor[place - 1], at_anchor[place]
    # Between its anchors a step's value follows their trend give or take its own noise, which the second
    # differences of the anchors' values measure without the trend.
    spread = _MARGIN * np.median(np.abs(np.diff(at_anchor[:-1], 2, axis=0)), axis=0)
    lo = (np.minimum(before, after) - spread).reshape(-1, 1)
    hi = (np.maximum(before, after) + spread).reshape(-1, 1)
    own = anchors * period + np.arange(period)[:, None]
    lo[own] = hi[own] = at_anchor.T[..., None]  # an anchor's bracket is its own value
    below = rows < lo
    under = np.count_nonzero(below, axis=1)  # (count_nonzero: several times faster than a bool sum)
    inside = rows <= hi
    width = np.count_nonzero(inside, axis=1) - under
    inside ^= below  # lo <= hi: the entries in [lo, hi]
    ok = (under < k) & (k <= under + width) & (width <= n // 8)
    kth = np.empty(len(rows), dtype=rows.dtype)
    good = np.flatnonzero(ok)
    if good.size:
        flat = np.flatnonzero(inside)
        flat = flat[ok[flat // n]]
        row = (np.cumsum(ok) - 1)[flat // n]  # the entry's row among the good ones
        values = rows.reshape(-1)[flat]
        wanted = np.cumsum(width[good]) - width[good] + (k - 1 - under[good])  # position in the row-major sort
        if rows.dtype == np.float32 and not (values.view(np.int32) < 0).any():
            # float32 values without a sign bit (no -0.0 either) order as their bit patterns: one sort of (row, bits).
            keys = (row.astype(np.uint64) << np.uint64(32)) | values.view(np.uint32)
            keys.sort()
            kth[good] = keys[wanted].astype(np.uint32).view(np.float32)
        else:
            kth[good] = values[np.lexsort((values, row))[wanted]]
    bad = np.flatnonzero(~ok)
    if bad.size:
        kth[bad] = np.partition(rows[bad], k - 1, axis=1)[:, k - 1]
    return kth


def _quantile_mask_block(coefs: np.ndarray, ratio: float, scope: str) -> np.ndarray:
    """The ``quantile`` rule on a (B, L, n) block of signed coefficients: kept = above numpy's quantile.

    ``np.quantile`` over the last axis (or both) of the batch computes, row by row, what the original code's
    ``np.quantile(coefs, ratio, axis=-1 or None, keepdims=True)`` computes on each step's (L, n) array.
    """
    if ratio == 0:
        return np.ones(coefs.shape, dtype=bool)
    axis = -1 if scope == "layerwise" else (1, 2)
    return coefs > np.quantile(coefs, ratio, axis=axis, keepdims=True)


def _mask_block(importance: np.ndarray, ratio: float, scope: str) -> np.ndarray:
    """``magnitude`` masks for a (B, L, n) block of importances (float, finite, non-negative)."""
    b, layers, n = importance.shape
    if scope == "layerwise":
        k = min(int(round(ratio * n)), n - 1)
        if k <= 0:
            return np.ones(importance.shape, dtype=bool)
        pruned = _prune_k_smallest(importance.reshape(b * layers, n), k, period=layers)
        return ~pruned.reshape(b, layers, n)
    k = min(int(round(ratio * layers * n)), layers * (n - 1))
    if k <= 0:
        return np.ones(importance.shape, dtype=bool)
    # Protect each layer's largest (the highest index among equal maxima, which is the
    # one a stable ascending order would put last) by making it +inf: k never exceeds
    # the number of unprotected entries, so an inf is never among the k smallest.
    protected = n - 1 - np.argmax(importance[:, :, ::-1], axis=2)
    work = importance.copy()
    np.put_along_axis(work, protected[:, :, None], np.inf, axis=2)
    pruned = _prune_k_smallest(work.reshape(b, layers * n), k)
    return ~pruned.reshape(b, layers, n)


def compute_mask(coefs, ratio: float, scope: str = "layerwise", rule: str = "magnitude") -> np.ndarray:
    """Kept-entry mask (True = kept) for coefficients (L, N), or a batch (T, L, N), under a mask rule
    (``magnitude``: the paper's; ``quantile``: the original code's, see the module docstring)."""
    ratio = check_ratio(ratio)
    check_scope(scope)
    check_rule(rule)
    array = as_numpy(coefs)
    if array.ndim not in (2, 3):
        raise EarlyBirdError(
            f"coefficients must have shape (layers, n) or (steps, layers, n); got shape {array.shape}"
        )
    if array.shape[-1] < 1 or array.shape[-2] < 1:
        raise EarlyBirdError(f"coefficients must have at least one layer and one entry; got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    batch = array if array.ndim == 3 else array[None]
    steps, layers, n = batch.shape
    out = np.empty(batch.shape, dtype=bool)
    per_block = max(1, _BLOCK_ELEMENTS // (layers * n))
    for start in range(0, steps, per_block):
        block = batch[start : start + per_block]
        if not np.isfinite(block).all():
            raise EarlyBirdError("coefficients contain NaN or inf")
        out[start : start + per_block] = (_quantile_mask_block(block, ratio, scope) if rule == "quantile" else
                                          _mask_block(np.abs(block), ratio, scope))
    return out if array.ndim == 3 else out[0]


def hamming_distance(a, b):
    """Fraction of entries where two masks differ; broadcasts over leading axes."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape[-2:] != b.shape[-2:]:
        raise EarlyBirdError(f"masks have different shapes: {a.shape} and {b.shape}")
    distance = np.not_equal(a, b).mean(axis=(-2, -1))
    return float(distance) if np.ndim(distance) == 0 else distance


def _singular_values_squared(masks: np.ndarray) -> np.ndarray:
    """Eigenvalues of the small Gram matrix of each 0/1 mask in a (B, L, N) stack.

    The Gram matrix (L x L, or N x N when N < L) of a 0/1 matrix holds co-occurrence counts,
    exact in float32 up to 2^24, so it is computed exactly by popcounts (:func:`_row_gram`, boolean
    masks with L <= N) or one batched matmul; its eigenvalues are the squared singular values. This is far cheaper than an SVD of each
    L x N mask (12 x 3072 for BERT-base neurons) and needs no multithreaded LAPACK on tall
    matrices, which is slow on busy small machines.
    """
    if masks.dtype == bool and masks.shape[1] <= masks.shape[2]:
        return np.linalg.eigvalsh(_row_gram(masks).astype(np.float64))
    m = masks.astype(np.float32)
    gram = m @ m.transpose(0, 2, 1) if m.shape[1] <= m.shape[2] else m.transpose(0, 2, 1) @ m
    return np.linalg.eigvalsh(gram.astype(np.float64))


def _row_gram(masks: np.ndarray) -> np.ndarray:
    """(B, L, L) int64: entries kept by both of two rows, for each pair of rows of each 0/1 mask of (B, L, N).

    The same integers as the float32 matmul of the masks, at half its CPU time on 12 x 3072 masks (measured: 3.7 ms
    against 9.8 ms for 227 steps): each row packed into 64-bit words, then one AND and popcount per pair of rows.
    """
    packed = np.packbits(masks, axis=2)
    pad = -packed.shape[2] % 8
    if pad:
        packed = np.concatenate([packed, np.zeros(packed.shape[:2] + (pad,), dtype=np.uint8)], axis=2)
    words = packed.view(np.uint64)
    layers = words.shape[1]
    first, second = np.triu_indices(layers)
    both = np.bitwise_count(words[:, first] & words[:, second]).sum(axis=2, dtype=np.int64)
    gram = np.empty((len(words), layers, layers), dtype=np.int64)
    gram[:, first, second] = both
    gram[:, second, first] = both
    return gram


def nuclear_norm(mask):
    """Nuclear norm (sum of singular values) of a 0/1 mask (L, N), or of each of (T, L, N).

    Singular values are the square roots of the Gram matrix's eigenvalues; eigenvalues
    below a rank tolerance (the same as numpy.linalg.matrix_rank's, applied to squared
    values) are exact zeros, so rank-deficient masks -- common, as layers often keep the same
    entries -- carry no rounding noise. Agrees with ``numpy.linalg.norm(mask, "nuc")`` to
    ~1e-9 relative. A mask equal to the one before it reuses that norm (masks often freeze).
    """
    array = np.asarray(mask)
    if array.ndim not in (2, 3):
        raise EarlyBirdError(f"mask must have shape (layers, n) or (steps, layers, n); got {array.shape}")
    batch = array if array.ndim == 3 else array[None]
    steps, layers, n = batch.shape
    norms = np.empty(steps, dtype=np.float64)
    if steps == 0:
        return norms if array.ndim == 3 else 0.0
    flat = batch.reshape(steps, layers * n)
    changed = np.ones(steps, dtype=bool)
    if steps > 1:
        changed[1:] = (flat[1:] != flat[:-1]).any(axis=1)
    fresh = np.flatnonzero(changed)
    per_block = max(1, _BLOCK_ELEMENTS // (layers * n))
    eps = np.finfo(np.float64).eps
    for start in range(0, len(fresh), per_block):
        idx = fresh[start : start + per_block]
        squared = _singular_values_squared(batch[idx])
        top = squared.max(axis=-1, keepdims=True)
        # matrix_rank's tolerance is sigma_max * max(L, N) * eps on singular values; on their
        # squares the rounding of the eigen-solver is ~ sigma_max^2 * max(L, N) * eps.
        squared = np.where(squared > top * max(layers, n) * eps * 10, squared, 0.0)
        norms[idx] = np.sqrt(squared).sum(axis=-1)
    # Carry each computed norm forward over the run of identical masks that follows it.
    owner = np.maximum.accumulate(np.where(changed, np.arange(steps), 0))
    norms = norms[owner]
    return norms if array.ndim == 3 else float(norms[0])
