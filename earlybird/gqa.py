"""The grouped-query attention (GQA) pruning rule of the patched decoders (Llama, Qwen3), for code without torch.

In a layer with `num_heads` query heads over `num_kv_heads` key/value heads, key/value head g serves the query heads
`g * n .. g * n + n - 1` (`n = num_heads // num_kv_heads`, as transformers' `repeat_kv` lays them out). After pruning,
every group keeps either 0 query heads (its key/value head is removed too) or exactly k, the same k >= 1 for every
group left in the layer. The patched modeling files enforce the same rule in `prune_heads` and when a model is built
from `config.pruned_heads` (their `is_valid_gqa_pruning`, which `tests/test_patch_decoders.py` checks against this one
on every pruning of small layers); masks and plans use this module so that they never need torch.
"""

from __future__ import annotations

from collections.abc import Iterable


def gqa_groups(num_heads: int, num_kv_heads: int) -> list[list[int]]:
    """The query heads of each key/value head: `[[0, .., n-1], [n, .., 2n-1], ...]`."""
    if num_kv_heads < 1 or num_heads % num_kv_heads:
        raise ValueError(f"{num_heads} query heads cannot be grouped over {num_kv_heads} key/value heads.")
    size = num_heads // num_kv_heads
    return [list(range(group * size, (group + 1) * size)) for group in range(num_kv_heads)]


def gqa_kept_per_group(num_heads: int, num_kv_heads: int, pruned_heads: Iterable[int]) -> list[int]:
    """The query heads each key/value group keeps once `pruned_heads` (original query-head numbering) are gone."""
    pruned = {int(h) for h in pruned_heads}
    return [sum(h not in pruned for h in group) for group in gqa_groups(num_heads, num_kv_heads)]


def is_valid_gqa_pruning(num_heads: int, num_kv_heads: int, pruned_heads: Iterable[int]) -> bool:
    """Every group keeps 0 or the same k >= 1 query heads (and at least one head is left)."""
    return len({kept for kept in gqa_kept_per_group(num_heads, num_kv_heads, pruned_heads) if kept}) == 1


def gqa_pruned_shape(num_heads: int, num_kv_heads: int, pruned_heads: Iterable[int]) -> tuple[int, int]:
    """(query heads, key/value heads) a layer keeps under a valid pruning: what the pruned model is built with."""
    kept = gqa_kept_per_group(num_heads, num_kv_heads, pruned_heads)
    return sum(kept), sum(1 for k in kept if k)
