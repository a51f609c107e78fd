"""The uniform scope and --round-to on the encoders (ViT, BERT): plans from records, applied to the patched models,
and the command line (`earlybird plan`)."""

import json

import numpy as np
import pytest
import torch

from earlybird.cli import main as cli_main
from earlybird.plans import load_plan, make_plan
from earlybird.records import CoefficientRecorder
from earlybird.slimming import apply_plan, fold_slimming, kept_sizes, model_shape


def _tiny(kind):
    from transformers import BertConfig, BertForSequenceClassification, ViTConfig, ViTForImageClassification

    torch.manual_seed(0)
    shape = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=40,
                 self_slimming=True, inter_slimming=True)
    if kind == "vit":
        return ViTForImageClassification(ViTConfig(image_size=8, patch_size=4, num_labels=3, **shape)).eval()
    return BertForSequenceClassification(BertConfig(vocab_size=50, num_labels=2, **shape)).eval()


def _inputs(kind):
    torch.manual_seed(1)
    if kind == "vit":
        return {"pixel_values": torch.randn(2, 3, 8, 8)}
    return {"input_ids": torch.randint(0, 50, (2, 7))}


def _records(path, model, steps=4, seed=0):
    rng = np.random.default_rng(seed)
    shape = model_shape(model)
    with CoefficientRecorder(path, meta={"model_type": shape["model_type"], "model": shape}) as recorder:
        for step in range(steps):
            heads = rng.normal(size=(shape["layers"], shape["heads"]))
            heads[1] *= 10  # a layer the global scope would spare
            recorder.record(step, torch.tensor(heads, dtype=torch.float32),
                            torch.tensor(rng.normal(size=(shape["layers"], shape["intermediate"])), dtype=torch.float32))
    return path


@pytest.mark.parametrize("kind", ("vit", "bert"))
def test_uniform_plans_prune_every_layer_alike_and_the_model_takes_them(kind, tmp_path):
    model = _tiny(kind)
    records = _records(tmp_path / "records", model)
    plan = make_plan(records, 3, 0.5, 0.3, "uniform", "uniform", round_to=4)
    assert plan["provenance"]["self_scope"] == plan["provenance"]["inter_scope"] == "uniform"
    with torch.no_grad():  # coefficients away from 1 so that folding matters
        for i, layer in enumerate(model.base_model.encoder.layer if kind == "bert" else model.base_model.layers):
            attention = layer.attention if kind == "vit" else layer.attention.self
            attention.self_slimming_coef.uniform_(0.5, 1.5)
    pruned = fold_slimming(apply_plan(model, plan))
    # heads: 4 - round(0.5 * 4) = 2 kept (a multiple of 4 rounds up: 4); neurons: 40 - round(12) = 28 -> 28
    assert kept_sizes(pruned) == {"heads": [4, 4, 4], "intermediate": [28, 28, 28]}
    plain = make_plan(records, 3, 0.5, 0.3, "uniform", "uniform")
    global_plan = make_plan(records, 3, 0.5, 0.3, "global", "global")
    assert [len(v) for v in plain["pruned_heads"].values()] == [2, 2, 2]
    assert [len(v) for v in global_plan["pruned_heads"].values()] != [2, 2, 2]  # global is uneven here
    assert set(map(len, plain["pruned_intermediate"].values())) == {12}
    model = fold_slimming(apply_plan(_tiny(kind), plain))
    assert kept_sizes(model) == {"heads": [2, 2, 2], "intermediate": [28, 28, 28]}
    with torch.no_grad():
        assert torch.isfinite(model(**_inputs(kind)).logits).all()


def test_cli_plan_takes_uniform_and_round_to(tmp_path, capsys):
    records = _records(tmp_path / "records", _tiny("bert"))
    out = tmp_path / "plan.json"
    assert cli_main(["plan", str(records), "--step", "2", "--self-pruning-ratio", "0.5", "--inter-pruning-ratio", "0.5",
                     "--self-pruning-scope", "uniform", "--inter-pruning-scope", "uniform", "--round-to", "8",
                     "-o", str(out)]) == 0
    plan = load_plan(out)
    assert plan["provenance"]["round_to"] == 8 and plan["provenance"]["gqa_rule"] is None  # BERT: no KV groups
    assert {40 - len(v) for v in plan["pruned_intermediate"].values()} == {24}  # 20 kept -> 24
    assert cli_main(["plan", str(records), "--step", "2", "--self-pruning-ratio", "0.5", "--inter-pruning-ratio",
                     "0.5", "--round-to", "0", "-o", str(tmp_path / "p2.json")]) == 2
    assert capsys.readouterr().err.strip().endswith("--round-to: round-to must be an integer >= 1; got 0")
    assert not (tmp_path / "p2.json").exists()
    json.loads(out.read_text())


def test_training_flags_take_uniform_round_to_and_the_gqa_rule():
    from earlybird.training.args import common_parser
    from earlybird.training.config import TrainConfig

    parser = common_parser()
    args = parser.parse_args(["--output-dir", "x", "--self-pruning-scope", "uniform", "--round-to", "16",
                              "--gqa-rule", "groups"])
    config = TrainConfig.from_args(args)
    assert config.pruning.scope("msa") == "uniform" and config.pruning.structure == {"gqa_rule": "groups",
                                                                                      "round_to": 16}
    args.round_to = -1
    from earlybird.errors import EarlyBirdError

    with pytest.raises(EarlyBirdError, match="--round-to: round-to must be an integer >= 1; got -1"):
        TrainConfig.from_args(args)
