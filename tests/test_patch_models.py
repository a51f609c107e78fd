"""The patched ViT and BERT: equivalences that make slimming and drawn tickets faithful."""

import pytest
import torch
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertModel,
    ViTConfig,
    ViTForImageClassification,
    ViTForMaskedImageModeling,
    ViTModel,
)
from transformers.models.bert import modeling_bert
from transformers.models.vit import modeling_vit

ATOL = 1e-5
LAYERS, HEADS, HIDDEN, INTER = 3, 4, 32, 37


def make_config(model, **flags):
    common = dict(
        hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=INTER, **flags
    )
    if model == "vit":
        return ViTConfig(image_size=16, patch_size=4, num_labels=3, **common)
    return BertConfig(vocab_size=60, max_position_embeddings=32, num_labels=3, **common)


def make_model(model, attn="sdpa", cls=None, config=None, **flags):
    cls = cls or (ViTForImageClassification if model == "vit" else BertForSequenceClassification)
    config = config if config is not None else make_config(model, **flags)
    config._attn_implementation = attn
    return cls(config).eval()


def make_inputs(model, masked=False, batch=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    if model == "vit":
        inputs = {"pixel_values": torch.randn(batch, 3, 16, 16, generator=gen)}
        seq = 17
    else:
        seq = 9
        inputs = {"input_ids": torch.randint(0, 60, (batch, seq), generator=gen)}
    if masked:
        mask = torch.ones(batch, seq, dtype=torch.long)
        mask[1, -3:] = 0
        mask[2, -5:] = 0
        inputs["attention_mask"] = mask
    return inputs


def coefficients(model):
    return [p for n, p in model.named_parameters() if n.endswith("slimming_coef")]


def randomize_coefficients(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for coef in coefficients(model):
            coef.copy_(torch.rand(coef.shape, generator=gen) * 1.5 + 0.1)


def logits(model, inputs):
    """The logits and the last hidden states (O(1) after LayerNorm, so an atol of 1e-5 means something)."""
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    return torch.cat([out.logits.flatten(), out.hidden_states[-1].flatten()])


def attention_modules(model):
    if isinstance(model.base_model, ViTModel):
        return [layer.attention for layer in model.base_model.layers]
    return [layer.attention.self for layer in model.base_model.encoder.layer]


def ffn_coefficient(model, layer):
    if isinstance(model.base_model, ViTModel):
        return model.base_model.layers[layer].mlp.inter_slimming_coef
    return model.base_model.encoder.layer[layer].intermediate.inter_slimming_coef


MODELS = ["vit", "bert"]


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("slim_before", [False, True])
def test_coefficients_at_one_equal_the_unpatched_model(model, attn, masked, slim_before, pristine_modeling):
    torch.manual_seed(0)
    patched = make_model(model, attn, self_slimming=True, inter_slimming=True, slim_before=slim_before)
    pristine_module = pristine_modeling(model)
    pristine_cls = getattr(
        pristine_module, "ViTForImageClassification" if model == "vit" else "BertForSequenceClassification"
    )
    config = make_config(model)
    config._attn_implementation = attn
    pristine = pristine_cls(config).eval()
    missing, unexpected = patched.load_state_dict(pristine.state_dict(), strict=False)
    assert not unexpected
    assert missing and all(k.endswith("slimming_coef") for k in missing)
    assert all(torch.equal(c, torch.ones_like(c)) for c in coefficients(patched))
    inputs = make_inputs(model, masked)
    torch.testing.assert_close(logits(patched, inputs), logits(pristine, inputs), atol=ATOL, rtol=0)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("slim_before", [False, True])
@pytest.mark.parametrize("soft_by_one", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_eager_equals_sdpa(model, slim_before, soft_by_one, masked):
    flags = dict(self_slimming=True, inter_slimming=True, slim_before=slim_before, soft_by_one=soft_by_one)
    torch.manual_seed(0)
    eager = make_model(model, "eager", **flags)
    randomize_coefficients(eager)
    sdpa = make_model(model, "sdpa", **flags)
    sdpa.load_state_dict(eager.state_dict())
    inputs = make_inputs(model, masked)
    torch.testing.assert_close(logits(sdpa, inputs), logits(eager, inputs), atol=ATOL, rtol=0)


@pytest.mark.parametrize("model", MODELS)
def test_slimming_is_not_a_no_op(model):
    """Guards the equivalence tests above: coefficients do change the outputs."""
    torch.manual_seed(0)
    slim = make_model(model, self_slimming=True, inter_slimming=True)
    inputs = make_inputs(model)
    before = logits(slim, inputs)
    randomize_coefficients(slim)
    assert (before - logits(slim, inputs)).abs().max() > 1e-2


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("soft_by_one", [False, True])
def test_zeroed_coefficients_equal_pruning(model, attn, soft_by_one):
    """The identity that makes a drawn ticket faithful (coefficients after the softmax, as in the study)."""
    torch.manual_seed(0)
    slim = make_model(model, attn, self_slimming=True, inter_slimming=True, soft_by_one=soft_by_one)
    randomize_coefficients(slim)
    heads = {0: [1, 3], 2: [0]}
    neurons = {0: [0, 5, 36], 1: list(range(0, INTER, 2))}
    pruned = make_model(model, attn, self_slimming=True, inter_slimming=True, soft_by_one=soft_by_one)
    pruned.load_state_dict(slim.state_dict())
    with torch.no_grad():
        attentions = attention_modules(slim)
        for layer, hs in heads.items():
            attentions[layer].self_slimming_coef[hs] = 0.0
        for layer, ns in neurons.items():
            ffn_coefficient(slim, layer)[ns] = 0.0
    pruned.prune_heads(heads)
    pruned.prune_intermediate(neurons)
    assert [m.num_attention_heads for m in attention_modules(pruned)] == [2, 4, 3]
    assert attention_modules(pruned)[0].self_slimming_coef.shape == (2,)
    assert ffn_coefficient(pruned, 1).shape == (INTER - len(neurons[1]),)
    inputs = make_inputs(model, masked=True)
    torch.testing.assert_close(logits(pruned, inputs), logits(slim, inputs), atol=ATOL, rtol=0)


@pytest.mark.parametrize("model", MODELS)
def test_pruning_uses_original_numbering_and_is_idempotent(model):
    torch.manual_seed(0)
    once = make_model(model, self_slimming=True)
    twice = make_model(model, self_slimming=True)
    twice.load_state_dict(once.state_dict())
    once.prune_heads({1: [0, 2, 3]})
    once.prune_intermediate({0: [3, 4, 10]})
    twice.prune_heads({1: [2]})
    twice.prune_heads({1: [0, 2, 3]})  # 2 already pruned: ignored; 0 and 3 in the original numbering
    twice.prune_intermediate({0: [4]})
    twice.prune_intermediate({0: [3, 4, 10]})
    assert twice.config.pruned_heads == {1: [0, 2, 3]} == once.config.pruned_heads
    assert twice.config.pruned_intermediate == {0: [3, 4, 10]}
    inputs = make_inputs(model)
    torch.testing.assert_close(logits(twice, inputs), logits(once, inputs), atol=ATOL, rtol=0)
    before = {k: v.clone() for k, v in twice.state_dict().items()}
    twice.prune_heads({1: [2]})
    assert all(torch.equal(before[k], v) for k, v in twice.state_dict().items())


@pytest.mark.parametrize("model", MODELS)
def test_pruning_every_head_or_neuron_of_a_layer_is_refused(model):
    slim = make_model(model, self_slimming=True)
    with pytest.raises(ValueError, match="every attention head"):
        slim.prune_heads({0: range(HEADS)})
    with pytest.raises(ValueError, match="every intermediate neuron"):
        slim.prune_intermediate({0: range(INTER)})
    with pytest.raises(ValueError, match="out of range"):
        slim.prune_heads({LAYERS: [0]})
    with pytest.raises(ValueError, match="head indices"):
        slim.prune_heads({0: [HEADS]})
    assert slim.config.pruned_heads == {} and attention_modules(slim)[0].num_attention_heads == HEADS


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("slim_before", [False, True])
def test_fold_slimming_keeps_outputs(model, slim_before, tmp_path):
    torch.manual_seed(0)
    slim = make_model(model, self_slimming=True, inter_slimming=True, slim_before=slim_before, soft_by_one=True)
    randomize_coefficients(slim)
    slim.prune_heads({0: [2]})
    inputs = make_inputs(model, masked=True)
    before = logits(slim, inputs)
    slim.fold_slimming()
    assert coefficients(slim) == []
    assert not slim.config.self_slimming and not slim.config.inter_slimming
    torch.testing.assert_close(logits(slim, inputs), before, atol=ATOL, rtol=0)
    slim.save_pretrained(tmp_path)
    reloaded, info = type(slim).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    torch.testing.assert_close(logits(reloaded.eval(), inputs), before, atol=ATOL, rtol=0)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("slim_before", [False, True])
def test_gradients_reach_the_coefficients(model, slim_before):
    torch.manual_seed(0)
    slim = make_model(model, self_slimming=True, inter_slimming=True, slim_before=slim_before).train()
    inputs = make_inputs(model)
    slim(**inputs, labels=torch.tensor([0, 1, 2])).loss.backward()
    for coef in coefficients(slim):
        assert coef.grad is not None and coef.grad.abs().sum() > 0


@pytest.mark.parametrize("model", MODELS)
def test_pruned_model_round_trips_through_save_pretrained(model, tmp_path):
    torch.manual_seed(0)
    slim = make_model(model, self_slimming=True, inter_slimming=True)
    randomize_coefficients(slim)
    slim.prune_heads({0: [0], 2: [1, 3]})
    slim.prune_intermediate({1: [2, 7], 2: list(range(30))})
    inputs = make_inputs(model, masked=True)
    slim.save_pretrained(tmp_path)
    reloaded, info = type(slim).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert reloaded.config.pruned_heads == {0: [0], 2: [1, 3]}
    assert reloaded.config.pruned_intermediate == {1: [2, 7], 2: list(range(30))}
    torch.testing.assert_close(logits(reloaded.eval(), inputs), logits(slim, inputs), atol=ATOL, rtol=0)
    # pruning the reloaded model goes on in the original numbering
    reloaded.prune_heads({2: [0, 1]})
    assert reloaded.config.pruned_heads[2] == [0, 1, 3]
    assert attention_modules(reloaded)[2].num_attention_heads == 1


@pytest.mark.parametrize("model", MODELS)
def test_checkpoint_without_coefficients_loads_with_slimming_at_one(model, tmp_path):
    torch.manual_seed(0)
    vanilla = make_model(model)
    vanilla.save_pretrained(tmp_path)
    slim, info = type(vanilla).from_pretrained(
        tmp_path, self_slimming=True, inter_slimming=True, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"]
    coefs = coefficients(slim)
    assert len(coefs) == 2 * LAYERS and all(torch.equal(c, torch.ones_like(c)) for c in coefs)
    inputs = make_inputs(model)
    torch.testing.assert_close(logits(slim.eval(), inputs), logits(vanilla, inputs), atol=ATOL, rtol=0)


@pytest.mark.parametrize(
    "cls", [ViTModel, ViTForMaskedImageModeling, BertModel, BertForMaskedLM, BertForQuestionAnswering]
)
def test_every_model_class_inherits_slimming_and_pruning(cls):
    model_type = "vit" if cls.__name__.startswith("ViT") else "bert"
    config = make_config(model_type, self_slimming=True, inter_slimming=True)
    if cls is ViTForMaskedImageModeling:
        config.encoder_stride = 4
    model = cls(config)
    assert len(coefficients(model)) == 2 * LAYERS
    model.prune_heads({0: [1]})
    model.prune_intermediate({0: [1]})
    model.fold_slimming()
    assert coefficients(model) == [] and model.config.pruned_heads == {0: [1]}


def exact_off_by_one(logits64):
    """exp(x_i) / (1 + sum_j exp(x_j)) in float64, shifted by m = max(0, max x): exact, not an approximation."""
    m = torch.clamp(logits64.max(dim=-1, keepdim=True).values, min=0.0)
    e = torch.exp(logits64 - m)
    return e / (torch.exp(-m) + e.sum(dim=-1, keepdim=True))


@pytest.mark.parametrize("module", [modeling_vit, modeling_bert])
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_softmax_off_by_one_matches_float64_reference(module, attn):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    rows = torch.tensor(
        [
            [0.3, -1.2, 2.0, 0.0, 0.7],
            [1e4, -1e4, 0.0, 5.0, 1e4],
            [-1e4, -1e4, -1e4, -1e4, -1e4],
            [-30.0, -25.0, -40.0, -31.0, -28.0],
            [80.0, 79.0, -80.0, 0.0, 1.0],
        ]
    )
    # head_dim 1 with a unit query: the scores are exactly the keys, so the rows above are the logits
    query = torch.ones(1, 1, rows.shape[0], 1)
    values = torch.randn(1, 1, rows.shape[1], 3, generator=torch.Generator().manual_seed(0))
    key_rows = rows.T.reshape(1, 1, rows.shape[1], rows.shape[0])  # one "head_dim" per logit row
    outputs = []
    for r in range(rows.shape[0]):
        key = key_rows[..., r : r + 1]
        key, value, mask = module.add_null_key_value(key, values, None)
        interface = ALL_ATTENTION_FUNCTIONS.get_interface(attn, module.eager_attention_forward)
        dummy = torch.nn.Module()
        dummy.is_causal = False
        out, _ = interface(dummy.eval(), query[:, :, r : r + 1], key, value, mask, scaling=1.0)
        outputs.append(out.reshape(-1))
    got = torch.stack(outputs)
    expected = exact_off_by_one(rows.double()) @ values[0, 0].double()
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), expected, atol=1e-6, rtol=1e-6)
    # the max-shifted approximation exp(x-m)/(1+sum exp(x-m)) is a different function: the test tells them apart
    m = rows.double().max(dim=-1, keepdim=True).values
    approx = torch.exp(rows.double() - m) / (1 + torch.exp(rows.double() - m).sum(-1, keepdim=True))
    assert not torch.allclose(approx @ values[0, 0].double(), expected, atol=1e-3)


@pytest.mark.parametrize("model", MODELS)
def test_off_by_one_model_is_finite_for_extreme_logits(model):
    torch.manual_seed(0)
    slim = make_model(model, "sdpa", soft_by_one=True, self_slimming=True)
    with torch.no_grad():
        for attention in attention_modules(slim):
            (attention.q_proj if model == "vit" else attention.query).weight.mul_(1e3)
    inputs = make_inputs(model, masked=True)
    out = logits(slim, inputs)
    assert torch.isfinite(out).all()
    slim.config._attn_implementation = "eager"
    torch.testing.assert_close(logits(slim, inputs), out, atol=1e-4, rtol=1e-4)


def test_soft_by_one_is_refused_for_bert_decoders():
    with pytest.raises(ValueError, match="encoder self-attention only"):
        make_model("bert", soft_by_one=True, is_decoder=True)


def test_config_round_trips_pruned_structure_with_string_keys():
    config = BertConfig.from_dict({"pruned_heads": {"3": [2, 1]}, "pruned_intermediate": {"0": [5]}})
    assert config.pruned_heads == {3: [1, 2]} and config.pruned_intermediate == {0: [5]}
    assert not config.self_slimming and not config.inter_slimming
    assert not config.slim_before and not config.soft_by_one
