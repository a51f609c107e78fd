"""Numerics under pressure: bf16 slimming keeps the coefficients, their optimizer state, the L1 penalty and the
records in fp32; the off-by-one softmax and coefficient folding stay finite for extreme values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from earlybird.errors import EarlyBirdError
from earlybird.records import load_records
from earlybird.slimming import coefficient_parameters, fold_slimming, l1_penalty
from test_patch_models import coefficients, exact_off_by_one, logits, make_inputs, make_model
from test_training_support import load_script, one_thread

pretrain = load_script("ViT_pretraining/main.py", "vit_pretraining_main")


def test_bf16_slimming_keeps_coefficients_penalty_and_records_in_fp32(tmp_path):
    with one_thread():
        assert pretrain.main(["--output-dir", str(tmp_path), "--max-steps", "4", "--per-device-train-batch-size", "16",
                              "--disable-tqdm", "--self-slimming", "--inter-slimming", "--l1-self", "5e-2",
                              "--l1-inter", "5e-2", "--mixed-precision", "bf16", "--checkpoint-every", "4"]) == 0
    checkpoint = tmp_path / "checkpoints" / "step-4"
    with safe_open(str(checkpoint / "model" / "model.safetensors"), "pt") as weights:
        coefs = [k for k in weights.keys() if k.endswith("slimming_coef")]
        assert len(coefs) == 8 and all(weights.get_tensor(k).dtype == torch.float32 for k in coefs)
        assert any(not torch.equal(weights.get_tensor(k), torch.ones_like(weights.get_tensor(k))) for k in coefs)
    state = torch.load(checkpoint / "optimizer.pt", weights_only=False)["state"]
    assert all(s["exp_avg"].dtype == torch.float32 and s["exp_avg_sq"].dtype == torch.float32 for s in state.values())
    records = load_records(tmp_path / "records")
    assert records.msa.dtype == np.float32 and records.mlp.dtype == np.float32 and records.meta["dtype"] == "float32"
    assert np.isfinite(records.msa).all() and np.isfinite(records.mlp).all() and records.steps.tolist() == [1, 2, 3, 4]
    assert not np.array_equal(records.msa[0], records.msa[-1])  # the coefficients moved under bf16 autocast


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_l1_penalty_is_fp32_under_autocast_and_for_half_parameters(dtype):
    model = make_model("vit", self_slimming=True, inter_slimming=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert l1_penalty(model, 1e-4, 1e-4).dtype == torch.float32
    model = model.to(dtype)  # even with half-precision coefficients, the sum is accumulated in fp32
    with torch.no_grad():
        for coef in coefficient_parameters(model):
            coef.fill_(1000.0)  # sum over 3 x (4 + 37) coefficients = 123000: past the float16 maximum
    penalty = l1_penalty(model, 1.0, 1.0)
    assert penalty.dtype == torch.float32 and torch.isfinite(penalty) and float(penalty.detach()) == pytest.approx(123000.0)


EXTREME_ROWS = torch.tensor([
    [1e30, -1e30, 0.0, 5.0, 1e30],
    [3e38, 3e38, -3e38, 0.0, 1.0],   # near the float32 (and bfloat16) maximum
    [-3e38, -3e38, -3e38, -3e38, -3e38],  # everything far below the extra zero logit: the output is ~0
    [88.0, 89.0, 90.0, -1e30, 0.0],  # exp overflows float32 past 88.7: the max shift must happen
])


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("module_name", ["vit", "bert"])
def test_off_by_one_softmax_is_finite_for_huge_logits(attn, dtype, module_name):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert import modeling_bert
    from transformers.models.vit import modeling_vit

    module = modeling_vit if module_name == "vit" else modeling_bert
    values = torch.randn(1, 1, EXTREME_ROWS.shape[1], 3, generator=torch.Generator().manual_seed(0))
    outputs = []
    for row in EXTREME_ROWS:
        key = row.reshape(1, 1, -1, 1).to(dtype)  # head_dim 1 and a unit query: the scores are the row itself
        key, value, mask = module.add_null_key_value(key, values.to(dtype), None)
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(attn, module.eager_attention_forward)
        dummy = torch.nn.Module().eval()
        dummy.is_causal = False
        out, _ = interface(dummy, torch.ones(1, 1, 1, 1, dtype=dtype), key, value, mask, scaling=1.0)
        outputs.append(out.reshape(-1))
    got = torch.stack(outputs).double()
    assert torch.isfinite(got).all()
    expected = exact_off_by_one(EXTREME_ROWS.to(dtype).double()) @ values[0, 0].to(dtype).double()
    tolerance = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got, expected, atol=tolerance, rtol=tolerance)


EXTREME_COEFFICIENTS = [0.0, 1e-30, 1e-42, 1e4]  # zero, tiny, float32-subnormal, large


@pytest.mark.parametrize("model_name", ["vit", "bert"])
@pytest.mark.parametrize("slim_before", [False, True])
def test_folding_extreme_coefficients_is_finite_and_exact(model_name, slim_before):
    model = make_model(model_name, "eager", self_slimming=True, inter_slimming=True, slim_before=slim_before,
                       soft_by_one=True)
    with torch.no_grad():
        for coef in coefficients(model):
            coef.copy_(torch.tensor(EXTREME_COEFFICIENTS).repeat(coef.numel())[: coef.numel()])
    inputs = make_inputs(model_name, masked=model_name == "bert")
    before = logits(model, inputs)
    fold_slimming(model)
    after = logits(model, inputs)
    assert not coefficients(model)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert torch.isfinite(before).all() and torch.isfinite(after).all()
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4 * float(before.abs().max()))


def test_a_fold_that_overflows_float16_is_refused():
    model = make_model("vit", "eager", inter_slimming=True).half()
    with torch.no_grad():
        model.base_model.layers[1].mlp.inter_slimming_coef[5] = 60000.0  # finite in float16
        model.base_model.layers[1].mlp.fc2.weight[:, 5] = 4.0  # 4 x 60000 is not
    with pytest.raises(EarlyBirdError, match=r"made base_model\.layers\.1\.mlp\.fc2\.weight non-finite|"
                                             r"made vit\.layers\.1\.mlp\.fc2\.weight non-finite"):
        fold_slimming(model)
