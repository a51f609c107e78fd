"""Masks of decoder heads with grouped-query attention keep THE GQA RULE; the uniform scope; --round-to.

Property tests over random coefficients: every scope x mask rule x GQA rule x round-to gives masks a patched Llama /
Qwen3 accepts (each KV group keeps 0 or the same k >= 1 query heads, >= 1 group per layer), choosing what each rule
says it chooses.
"""

import itertools

import numpy as np
import pytest

from earlybird.errors import EarlyBirdError
from earlybird.masks import compute_mask, gqa_violation, head_group_size
from earlybird.plans import make_plan, plan_from_coefficients, validate_plan
from earlybird.records import Records

SCOPES = ("layerwise", "global", "uniform")
RATIOS = (0.0, 0.1, 0.25, 0.3, 0.5, 0.6, 0.8, 0.95)


def _coefficients(seed, steps=6, layers=4, n=8, ties=False):
    rng = np.random.default_rng(seed)
    coefs = rng.normal(size=(steps, layers, n))
    if ties:  # coefficients as they start (all 1) or collapse: many equal values
        coefs = np.round(coefs)
    return coefs


@pytest.mark.parametrize("scope,rule,gqa_rule,round_to,group_size",
                         list(itertools.product(SCOPES, ("magnitude", "quantile"), ("per-group", "groups"), (1, 2),
                                                (2, 4))))
def test_masks_keep_the_gqa_rule(scope, rule, gqa_rule, round_to, group_size):
    for seed, ratio in itertools.product(range(4), RATIOS):
        coefs = _coefficients(seed, ties=seed % 2 == 1)
        masks = compute_mask(coefs, ratio, scope, rule, group_size=group_size, gqa_rule=gqa_rule, round_to=round_to)
        for mask in masks.reshape(-1, 8):
            kept = mask.reshape(-1, group_size).sum(axis=1)
            assert len(set(kept[kept > 0])) <= 1, (mask, kept)
            if mask.any():  # (a whole layer pruned is the whole-layer rule's case, refused by plans apart)
                assert gqa_violation(list(np.flatnonzero(~mask)), 8, group_size) is None
            if rule == "magnitude":  # the quantile rule may prune a layer whole (as it always could); plans refuse
                assert kept.any()
            units = kept.max() if gqa_rule == "per-group" else (kept > 0).sum()
            full = group_size if gqa_rule == "per-group" else 8 // group_size
            assert units == full or units % round_to == 0 or units == 0


@pytest.mark.parametrize("scope", ("layerwise", "uniform"))
def test_per_group_prunes_the_least_important_heads_of_every_group(scope):
    coefs = _coefficients(3)
    masks = compute_mask(coefs, 0.5, scope, group_size=4, gqa_rule="per-group")
    for step, layer in itertools.product(range(coefs.shape[0]), range(coefs.shape[1])):
        groups = np.abs(coefs[step, layer]).reshape(2, 4)
        kept = masks[step, layer].reshape(2, 4)
        assert (kept.sum(axis=1) == 2).all()  # round(0.5 * 4) = 2 pruned per group
        for values, keep in zip(groups, kept):
            assert values[~keep].max() < values[keep].min()


def test_groups_prunes_whole_groups_by_mean_importance():
    coefs = _coefficients(5, n=16)  # 4 groups of 4
    masks = compute_mask(coefs, 0.5, "layerwise", group_size=4, gqa_rule="groups")
    for step, layer in itertools.product(range(coefs.shape[0]), range(coefs.shape[1])):
        means = np.abs(coefs[step, layer]).reshape(4, 4).mean(axis=1)
        kept = masks[step, layer].reshape(4, 4)
        assert kept.all(axis=1).sum() == 2 and (kept.all(axis=1) | ~kept.any(axis=1)).all()
        assert means[~kept.all(axis=1)].max() < means[kept.all(axis=1)].min()


def test_global_per_group_ranks_across_layers_and_keeps_a_head_per_group():
    coefs = _coefficients(7)
    coefs[:, 0] *= 1e-3  # layer 0 is far less important: it loses the most, but keeps one head per group
    masks = compute_mask(coefs, 0.5, "global", group_size=4, gqa_rule="per-group")
    per_group = masks.reshape(6, 4, 2, 4).sum(axis=-1)
    assert (per_group[:, 0] == 1).all()
    assert (per_group.sum(axis=(1, 2)) == 16).all()  # round(0.5 * 4 layers * 4 slots) = 8 slots of 2 heads


def test_group_size_one_changes_nothing():
    coefs = _coefficients(1, n=12)
    for scope, rule in itertools.product(("layerwise", "global"), ("magnitude", "quantile")):
        assert (compute_mask(coefs, 0.4, scope, rule, group_size=1, gqa_rule="groups") ==
                compute_mask(coefs, 0.4, scope, rule)).all()


@pytest.mark.parametrize("rule", ("magnitude", "quantile"))
def test_uniform_prunes_the_same_number_in_every_layer(rule):
    coefs = _coefficients(2, steps=20, n=37)
    coefs[:, 1] *= 10  # under global, layer 1 would keep everything
    masks = compute_mask(coefs, 0.4, "uniform", rule)
    counts = masks.sum(axis=-1)
    assert (counts == counts[:, :1]).all()
    if rule == "magnitude":
        assert (counts == 37 - round(round(0.4 * 4 * 37) / 4)).all()
    importance = np.abs(coefs) if rule == "magnitude" else coefs
    for step, layer in itertools.product(range(20), range(4)):
        row, keep = importance[step, layer], masks[step, layer]
        assert row[~keep].max() <= row[keep].min()
    assert not (compute_mask(coefs, 0.4, "global", rule).sum(axis=-1) == counts).all()  # global differs here


def test_round_to_rounds_the_kept_width_up():
    coefs = _coefficients(4, steps=10, n=96)
    for scope in SCOPES:
        plain = compute_mask(coefs, 0.45, scope)
        rounded = compute_mask(coefs, 0.45, scope, round_to=16)
        assert (rounded.sum(axis=-1) % 16 == 0).all()
        assert (rounded >= plain).all()  # prunes fewer, never more: only entries put back
        assert (rounded.sum(axis=-1) - plain.sum(axis=-1) < 16).all()
        importance = np.abs(coefs)
        back = rounded & ~plain  # the ones put back are the most important of those pruned
        for step, layer in zip(*np.nonzero(back.any(axis=-1))):
            still = ~rounded[step, layer]
            if still.any():
                assert importance[step, layer][back[step, layer]].min() >= importance[step, layer][still].max()
    # a width that is not a multiple may stay whole: 12 heads, round to 8 -> 8 or 12 kept
    assert set(compute_mask(_coefficients(0, n=12), 0.5, "layerwise", round_to=8).sum(axis=-1).ravel()) <= {8, 12}


def test_round_to_counts_heads_per_group_or_groups_under_gqa():
    coefs = _coefficients(6, n=32)  # 4 KV groups of 8
    per_group = compute_mask(coefs, 0.6, "layerwise", group_size=8, round_to=4)
    assert set(per_group.reshape(6, 4, 4, 8).sum(axis=-1).ravel()) == {4}  # 8 - round(4.8) = 3 -> 4
    groups = compute_mask(coefs, 0.6, "layerwise", group_size=8, gqa_rule="groups", round_to=2)
    assert set(groups.reshape(6, 4, 4, 8).all(axis=-1).sum(axis=-1).ravel()) == {2}  # 4 - round(2.4) = 2


def test_bad_structure_is_refused():
    with pytest.raises(EarlyBirdError, match="do not split into KV groups of 3"):
        compute_mask(np.ones((2, 8)), 0.5, group_size=3)
    with pytest.raises(EarlyBirdError, match="GQA rule must be one of per-group, groups"):
        compute_mask(np.ones((2, 8)), 0.5, group_size=4, gqa_rule="heads")
    with pytest.raises(EarlyBirdError, match="round-to must be an integer >= 1"):
        compute_mask(np.ones((2, 8)), 0.5, round_to=0)
    assert head_group_size({"heads": 8, "kv_heads": 2}) == 4 and head_group_size({"heads": 8}) == 1


def _llama_records(seed=0, steps=5):
    rng = np.random.default_rng(seed)
    return Records.from_arrays(msa=rng.normal(size=(steps, 4, 8)), mlp=rng.normal(size=(steps, 4, 96)),
                               meta={"model_type": "llama", "model": {"model_type": "llama", "layers": 4, "heads": 8,
                                                                      "intermediate": 96, "kv_heads": 2}})


@pytest.mark.parametrize("gqa_rule", ("per-group", "groups"))
@pytest.mark.parametrize("scope", SCOPES)
def test_plans_of_a_gqa_model_keep_the_rule_and_say_how(gqa_rule, scope):
    records = _llama_records()
    for random_seed in (None, 3):
        plan = make_plan(records, 2, 0.5, 0.5, scope, scope, random_seed=random_seed, gqa_rule=gqa_rule, round_to=2)
        validate_plan(plan)
        assert plan["shape"]["kv_heads"] == 2
        assert plan["provenance"]["gqa_rule"] == gqa_rule and plan["provenance"]["round_to"] == 2
        for heads in plan["pruned_heads"].values():
            assert gqa_violation(heads, 8, 4) is None
        if scope == "uniform":
            assert len({len(v) for v in plan["pruned_heads"].values()}) == 1
            assert len({len(v) for v in plan["pruned_intermediate"].values()}) == 1


def test_a_plan_breaking_the_gqa_rule_is_refused():
    plan = plan_from_coefficients({"msa": np.ones((4, 8)), "mlp": None}, 0, {"msa": 0.0, "mlp": 0.0}, {},
                                  meta={"model": {"heads": 8, "kv_heads": 2}})
    plan["pruned_heads"]["1"] = [0, 1, 4]  # group 0 keeps 2, group 1 keeps 3
    with pytest.raises(EarlyBirdError, match=r"p.json: layer 1 would keep \[2, 3\] query heads per key/value group; "
                                             r"with grouped-query attention every group must keep 0 or the same"):
        validate_plan(plan, "p.json")
    plan["pruned_heads"]["1"] = [0, 1, 2, 3]  # a whole group: fine
    validate_plan(plan)
    plan["shape"]["kv_heads"] = 3
    with pytest.raises(EarlyBirdError, match=r"shape\['kv_heads'\] is 3; expected a positive divisor"):
        validate_plan(plan)
