"""earlybird.slimming: coefficients, L1 penalty, plans applied to models, FLOPs from shapes."""

import pytest
import torch
from transformers import BertConfig, BertForQuestionAnswering, ViTConfig, ViTForImageClassification

from earlybird.errors import EarlyBirdError
from earlybird.slimming import (
    apply_plan,
    encoder_flops_per_token,
    fold_slimming,
    l1_penalty,
    model_shape,
    read_coefficients,
)


def tiny(model, **flags):
    common = dict(hidden_size=16, num_hidden_layers=3, num_attention_heads=4, intermediate_size=10, **flags)
    if model == "vit":
        return ViTForImageClassification(ViTConfig(image_size=8, patch_size=4, **common))
    return BertForQuestionAnswering(BertConfig(vocab_size=30, **common))


@pytest.mark.parametrize("model", ["vit", "bert"])
def test_read_coefficients_stacks_layers(model):
    m = tiny(model, self_slimming=True, inter_slimming=True)
    with torch.no_grad():
        for i, p in enumerate(p for n, p in m.named_parameters() if n.endswith("self_slimming_coef")):
            p.fill_(i + 1)
    msa, mlp = read_coefficients(m)
    assert msa.shape == (3, 4) and mlp.shape == (3, 10)
    assert torch.equal(msa[:, 0], torch.tensor([1.0, 2.0, 3.0]))
    assert not msa.requires_grad
    assert read_coefficients(tiny(model)) == (None, None)


def test_l1_penalty_is_fp32_and_weighted():
    m = tiny("bert", self_slimming=True, inter_slimming=True)
    expected = 0.5 * 3 * 4 + 0.25 * 3 * 10
    penalty = l1_penalty(m, 0.5, 0.25)
    assert penalty.dtype == torch.float32 and penalty.item() == pytest.approx(expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert l1_penalty(m, 0.5, 0.25).dtype == torch.float32
    assert l1_penalty(m, 0.0, 0.0) == 0.0
    penalty.backward()
    assert all(p.grad is not None for n, p in m.named_parameters() if "slimming_coef" in n)


def test_apply_plan_prunes_and_refuses_what_does_not_fit():
    m = tiny("vit", self_slimming=True, inter_slimming=True)
    plan = {
        "pruned_heads": {"0": [1, 2], "2": [0]},
        "pruned_intermediate": {"1": [0, 9]},
        "shape": model_shape(m) | {"model_type": "vit"},
    }
    dense_flops = encoder_flops_per_token(m, seq_len=5)
    apply_plan(m, plan)
    assert m.config.pruned_heads == {0: [1, 2], 2: [0]} and m.config.pruned_intermediate == {1: [0, 9]}
    assert encoder_flops_per_token(m, seq_len=5) < dense_flops
    fold_slimming(m)
    assert not any("slimming_coef" in n for n, _ in m.named_parameters())
    for bad, message in [
        ({"pruned_heads": {"7": [0]}}, "layer 7"),
        ({"pruned_heads": {"0": [4]}}, "outside 0..3"),
        ({"pruned_heads": {"1": [0, 1, 2, 3]}}, "at least one must remain"),
        ({"pruned_heads": {"1": ["x"]}}, "lists of integers"),
        ({"shape": {"layers": 12}}, "made for 12 layers"),
        ({"provenance": {"model": {"model_type": "bert"}}}, "came from a .bert. model"),
    ]:
        with pytest.raises(EarlyBirdError, match=message):
            apply_plan(tiny("vit"), bad)
    # a block the records did not have is declared as None: nothing to compare
    apply_plan(tiny("vit"), {"pruned_heads": {"0": [1]}, "shape": {"layers": 3, "heads": 4, "intermediate": None}})


def test_flops_from_shapes_match_the_formula():
    m = tiny("bert")
    hidden, inner, inter, seq = 16, 16, 10, 7
    per_layer = 2 * (4 * hidden * inner + 2 * seq * inner + 2 * hidden * inter)
    assert encoder_flops_per_token(m, seq) == 3 * per_layer
    m.prune_heads({0: [0, 1]})
    m.prune_intermediate({0: [0, 1, 2, 3, 4]})
    pruned_layer = 2 * (4 * hidden * 8 + 2 * seq * 8 + 2 * hidden * 5)
    assert encoder_flops_per_token(m, seq) == 2 * per_layer + pruned_layer
