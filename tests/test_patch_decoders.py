"""The patched decoder LLMs (Llama, Qwen3) with grouped-query attention: slimming coefficients at 1 are the unpatched
model, zeroed coefficients are the pruned model (logits and greedy generation), and pruning keeps every layer a
grouped-query attention layer (`is_valid_gqa_pruning`)."""

import copy

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM
from transformers.models.llama import modeling_llama
from transformers.models.qwen3 import modeling_qwen3

from earlybird import gqa, slimming
from earlybird.errors import EarlyBirdError
from test_patch_boundaries import cpu_varlen, flex_without_compile  # noqa: F401 -- fixtures

ATOL = 1e-5
LAYERS, HEADS, HIDDEN, INTER, VOCAB, HEAD_DIM = 4, 8, 64, 96, 61, 8
MODELS = ["llama", "qwen3"]
CLASSES = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen3": (Qwen3Config, Qwen3ForCausalLM)}


def make_config(model, kv_heads=2, **flags):
    config_cls, _ = CLASSES[model]
    return config_cls(
        vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
        num_key_value_heads=kv_heads, intermediate_size=INTER, head_dim=HEAD_DIM, max_position_embeddings=64,
        pad_token_id=0, bos_token_id=1, eos_token_id=None, **flags,
    )


def make_model(model, attn="sdpa", config=None, kv_heads=2, **flags):
    config = config if config is not None else make_config(model, kv_heads, **flags)
    config._attn_implementation = attn
    return CLASSES[model][1](config).eval()


def make_inputs(batch=3, seq=9, seed=0):
    """Left padding, as for generation: rows 1 and 2 start with 2 and 4 pad tokens."""
    gen = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (batch, seq), generator=gen)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, :2] = 0
    mask[2, :4] = 0
    return {"input_ids": input_ids.masked_fill(mask == 0, 0), "attention_mask": mask}


def coefficients(model):
    return [p for n, p in model.named_parameters() if n.endswith("slimming_coef")]


def randomize_coefficients(model, seed=1):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for coef in coefficients(model):
            coef.copy_(torch.rand(coef.shape, generator=gen) * 1.5 + 0.1)


def logits(model, inputs):
    """The logits at the real (non-padding) positions and the last hidden states there."""
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True)
    real = inputs["attention_mask"].bool()
    return torch.cat([out.logits[real].flatten(), out.hidden_states[-1][real].flatten()])


def generated(model, inputs, **kwargs):
    with torch.no_grad():
        return model.generate(**inputs, max_new_tokens=6, do_sample=False, **kwargs)


def attentions(model):
    return [layer.self_attn for layer in model.model.layers]


def head_counts(model):
    return [(a.num_heads, a.num_key_value_heads, a.num_key_value_groups) for a in attentions(model)]


def zero_and_prune(model, heads, neurons, attn="sdpa", **config_kw):
    """(the model with the coefficients of `heads`/`neurons` zeroed, a copy physically pruned of them)"""
    torch.manual_seed(0)
    slim = make_model(model, attn, self_slimming=True, inter_slimming=True, **config_kw)
    randomize_coefficients(slim)
    pruned = make_model(model, attn, self_slimming=True, inter_slimming=True, **config_kw)
    pruned.load_state_dict(slim.state_dict())
    with torch.no_grad():
        for layer, hs in heads.items():
            attentions(slim)[layer].self_slimming_coef[hs] = 0.0
        for layer, ns in neurons.items():
            slim.model.layers[layer].mlp.inter_slimming_coef[ns] = 0.0
    pruned.prune_heads(heads)
    pruned.prune_intermediate(neurons)
    return slim, pruned


# 8 query heads over 2 key/value heads: group 0 = heads 0-3, group 1 = heads 4-7
WHOLE_GROUPS = {0: [4, 5, 6, 7], 2: [0, 1, 2, 3]}  # a KV head goes with its last query head
SAME_PER_GROUP = {0: [0, 4], 1: [1, 2, 5, 6], 3: [0, 1, 2, 4, 5, 6]}  # each group keeps 3, 2, 1
NEURONS = {0: [0, 5, 95], 1: list(range(0, INTER, 2))}


def test_the_gqa_rule_worked_example():
    """docs/patch.md's example: 8 query heads, 2 key/value heads."""
    valid, groups = modeling_llama.is_valid_gqa_pruning, modeling_llama.gqa_groups
    assert groups(8, 2) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert valid(8, 2, []) and valid(8, 2, [4, 5, 6, 7]) and valid(8, 2, [0, 4]) and valid(8, 2, [1, 2, 3, 5, 6, 7])
    assert not valid(8, 2, [0]) and not valid(8, 2, [0, 1, 4]) and not valid(8, 2, range(8))
    # 4 KV heads: group {0, 1} gone, the other three keep 1 each
    assert valid(8, 4, [0, 1, 2, 4, 6]) and not valid(8, 4, [0, 1, 2, 4])
    assert modeling_llama.gqa_kept_per_group(8, 4, [0, 1, 2, 4]) == [0, 1, 1, 2]
    assert modeling_qwen3.is_valid_gqa_pruning(8, 4, [0, 1]) and not modeling_qwen3.is_valid_gqa_pruning(8, 4, [0])


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("kv_heads", [2, 8])
def test_coefficients_at_one_equal_the_unpatched_model(model, attn, kv_heads, pristine_modeling):
    torch.manual_seed(0)
    patched = make_model(model, attn, kv_heads=kv_heads, self_slimming=True, inter_slimming=True)
    pristine_cls = getattr(pristine_modeling(model), CLASSES[model][1].__name__)
    config = make_config(model, kv_heads)
    config._attn_implementation = attn
    pristine = pristine_cls(config).eval()
    missing, unexpected = patched.load_state_dict(pristine.state_dict(), strict=False)
    assert not unexpected
    assert missing and all(k.endswith("slimming_coef") for k in missing)
    assert all(torch.equal(c, torch.ones_like(c)) for c in coefficients(patched))
    inputs = make_inputs()
    torch.testing.assert_close(logits(patched, inputs), logits(pristine, inputs), atol=ATOL, rtol=0)
    randomize_coefficients(patched)  # guards the equivalence: the coefficients do change the outputs
    assert (logits(patched, inputs) - logits(pristine, inputs)).abs().max() > 1e-2


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("heads", [WHOLE_GROUPS, SAME_PER_GROUP], ids=["whole-groups", "same-per-group"])
def test_zeroed_coefficients_equal_pruning(model, attn, heads):
    slim, pruned = zero_and_prune(model, heads, NEURONS, attn)
    expected = {
        id(WHOLE_GROUPS): [(4, 1, 4), (8, 2, 4), (4, 1, 4), (8, 2, 4)],
        id(SAME_PER_GROUP): [(6, 2, 3), (4, 2, 2), (8, 2, 4), (2, 2, 1)],
    }[id(heads)]
    assert head_counts(pruned) == expected
    assert attentions(pruned)[0].k_proj.out_features == expected[0][1] * HEAD_DIM
    assert pruned.model.layers[1].mlp.inter_slimming_coef.shape == (INTER // 2,)
    inputs = make_inputs()
    torch.testing.assert_close(logits(pruned, inputs), logits(slim, inputs), atol=ATOL, rtol=0)
    assert torch.equal(generated(pruned, inputs), generated(slim, inputs))


@pytest.mark.parametrize("model", MODELS)
def test_a_mixture_of_whole_groups_and_reduced_groups(model):
    """4 KV heads (groups of 2): layer 0 loses groups 0 and 1 and one head of each other group."""
    heads = {0: [0, 1, 2, 3, 4, 6], 3: [1, 3, 5, 7]}
    slim, pruned = zero_and_prune(model, heads, {}, kv_heads=4)
    assert head_counts(pruned)[0] == (2, 2, 1) and head_counts(pruned)[3] == (4, 4, 1)
    inputs = make_inputs()
    torch.testing.assert_close(logits(pruned, inputs), logits(slim, inputs), atol=ATOL, rtol=0)


@pytest.mark.parametrize("model", MODELS)
def test_a_pruned_model_generates_with_a_static_cache(model):
    """StaticCache initialises each layer from its first key states, so per-layer key/value head counts work; an
    early-initialised one (chunked prefill) gets the per-layer counts from the model."""
    _, pruned = zero_and_prune(model, WHOLE_GROUPS, NEURONS)
    inputs = make_inputs()
    dynamic = generated(pruned, inputs)
    assert torch.equal(generated(pruned, inputs, cache_implementation="static"), dynamic)
    assert pruned._get_static_cache_init_shape() == ([1, 2, 1, 2], HEAD_DIM)
    assert make_model(model)._get_static_cache_init_shape() == (2, HEAD_DIM)  # unpruned: transformers' own answer


@pytest.mark.parametrize("model", MODELS)
def test_eager_equals_sdpa_on_a_pruned_model(model):
    _, eager = zero_and_prune(model, SAME_PER_GROUP, NEURONS, "eager")
    sdpa = make_model(model, "sdpa", config=copy.deepcopy(eager.config))
    sdpa.load_state_dict(eager.state_dict())
    inputs = make_inputs()
    torch.testing.assert_close(logits(sdpa, inputs), logits(eager, inputs), atol=ATOL, rtol=0)


@pytest.mark.parametrize("model", MODELS)
def test_fold_slimming_keeps_outputs(model):
    _, pruned = zero_and_prune(model, SAME_PER_GROUP, NEURONS)
    inputs = make_inputs()
    before = logits(pruned, inputs)
    pruned.fold_slimming()
    assert coefficients(pruned) == [] and not pruned.config.self_slimming and not pruned.config.inter_slimming
    torch.testing.assert_close(logits(pruned, inputs), before, atol=ATOL, rtol=0)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("fold", [False, True])
def test_a_pruned_model_round_trips_through_save_pretrained(model, fold, tmp_path):
    _, pruned = zero_and_prune(model, SAME_PER_GROUP, NEURONS)
    if fold:
        pruned.fold_slimming()
    pruned.save_pretrained(tmp_path)
    reloaded, info = type(pruned).from_pretrained(tmp_path, output_loading_info=True)
    assert not any(info.values()), info
    assert reloaded.config.pruned_heads == {int(k): v for k, v in SAME_PER_GROUP.items()}
    assert head_counts(reloaded) == head_counts(pruned)
    inputs = make_inputs()
    torch.testing.assert_close(logits(reloaded.eval(), inputs), logits(pruned, inputs), atol=ATOL, rtol=0)


@pytest.mark.parametrize("model", MODELS)
def test_pruning_uses_original_numbering_and_is_idempotent(model):
    torch.manual_seed(0)
    once = make_model(model, self_slimming=True)
    twice = make_model(model, self_slimming=True)
    twice.load_state_dict(once.state_dict())
    once.prune_heads({1: [0, 1, 4, 5]})
    once.prune_intermediate({0: [3, 4, 10]})
    twice.prune_heads({"1": [1, 5]})  # str keys, as JSON holds them
    twice.prune_heads({-3: [0, 1, 4, 5]})  # 1 and 5 already pruned; 0 and 4 in the original numbering
    twice.prune_intermediate({0: [4]})
    twice.prune_intermediate({0: [3, 4, 10]})
    assert twice.config.pruned_heads == {1: [0, 1, 4, 5]} == once.config.pruned_heads
    assert twice.config.pruned_intermediate == {0: [3, 4, 10]}
    inputs = make_inputs()
    torch.testing.assert_close(logits(twice, inputs), logits(once, inputs), atol=ATOL, rtol=0)


@pytest.mark.parametrize("model", MODELS)
def test_an_invalid_gqa_pruning_or_a_whole_layer_is_refused_and_changes_nothing(model):
    slim = make_model(model, self_slimming=True, inter_slimming=True)
    before = {k: v.clone() for k, v in slim.state_dict().items()}
    with pytest.raises(ValueError, match=r"layer 1: grouped-query attention would keep \[3, 4\] query heads") as err:
        slim.prune_heads({0: [0, 4], 1: [0]})  # layer 0 is valid, layer 1 is not: nothing is pruned
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="layer 2: pruning every attention head"):
        slim.prune_heads({2: range(HEADS)})
    with pytest.raises(ValueError, match="every intermediate neuron"):
        slim.prune_intermediate({0: range(INTER)})
    with pytest.raises(ValueError, match="out of range"):
        slim.prune_heads({LAYERS: [0]})
    with pytest.raises(ValueError, match="head indices"):
        slim.prune_heads({0: [HEADS]})
    after = slim.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert slim.config.pruned_heads == {} and head_counts(slim)[0] == (HEADS, 2, 4)


@pytest.mark.parametrize("model", MODELS)
def test_a_pruned_structure_on_a_config_builds_it_or_is_refused(model):
    config = make_config(model)
    config.pruned_heads = {"0": [4, 5, 6, 7], "-1": [0, 4]}
    config.pruned_intermediate = {"1": [0, 5]}
    built = make_model(model, config=config)
    assert head_counts(built) == [(4, 1, 4), (8, 2, 4), (8, 2, 4), (6, 2, 3)]
    assert [layer.mlp.intermediate_size for layer in built.model.layers] == [INTER, INTER - 2, INTER, INTER]
    for value, message in [({"1": [0]}, r"config.pruned_heads: layer 1: grouped-query attention would keep \[3, 4\]"),
                           ({"0": list(range(HEADS))}, "every attention head"),
                           ({"4": [0]}, "layer 4 out of range")]:
        config = make_config(model)
        config.pruned_heads = value
        with pytest.raises(ValueError, match=message):
            make_model(model, config=config)


@pytest.mark.parametrize("model", MODELS)
def test_pruning_or_folding_one_model_leaves_its_siblings_alone(model):
    config = make_config(model, self_slimming=True, inter_slimming=True)
    pruned, sibling, folded = (make_model(model, config=config) for _ in range(3))
    pruned.prune_heads({0: [4, 5, 6, 7]})
    pruned.prune_intermediate({1: [3]})
    folded.fold_slimming()
    assert config.pruned_heads == {} and config.pruned_intermediate == {} and config.self_slimming
    assert sibling.config.pruned_heads == {} and sibling.config.self_slimming
    assert pruned.config.pruned_heads == {0: [4, 5, 6, 7]} and not folded.config.self_slimming


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("saved_with_coefficients", [True, False])
def test_coefficients_stay_fp32_under_from_pretrained_bf16(model, saved_with_coefficients, tmp_path):
    torch.manual_seed(0)
    flags = dict(self_slimming=True, inter_slimming=True)
    make_model(model, **(flags if saved_with_coefficients else {})).save_pretrained(tmp_path)
    half = CLASSES[model][1].from_pretrained(tmp_path, dtype=torch.bfloat16, **flags).eval()
    assert len(coefficients(half)) == 2 * LAYERS and {c.dtype for c in coefficients(half)} == {torch.float32}
    assert all(p.dtype == torch.bfloat16 for n, p in half.named_parameters() if not n.endswith("slimming_coef"))
    assert all(torch.equal(c, torch.ones_like(c)) for c in coefficients(half)) or saved_with_coefficients
    with torch.no_grad():
        out = half(**make_inputs())
    assert out.logits.dtype == torch.bfloat16


@pytest.mark.parametrize("model", MODELS)
def test_features_off_by_default(model):
    plain = make_model(model)
    assert coefficients(plain) == [] and plain.config.pruned_heads == {} and head_counts(plain)[0] == (HEADS, 2, 4)
    assert "self_slimming" in plain.config.to_dict()


def test_the_library_rule_is_the_patch_rule_on_every_pruning_of_small_layers():
    """`earlybird.gqa` (no torch, for masks and plans) and the patched modeling files decide alike, exhaustively."""
    from itertools import chain, combinations

    for num_heads, num_kv_heads in [(8, 2), (8, 4), (4, 4), (6, 3), (4, 1)]:
        for pruned in chain.from_iterable(combinations(range(num_heads), r) for r in range(num_heads + 1)):
            expected = gqa.is_valid_gqa_pruning(num_heads, num_kv_heads, pruned)
            assert modeling_llama.is_valid_gqa_pruning(num_heads, num_kv_heads, pruned) == expected
            assert modeling_qwen3.is_valid_gqa_pruning(num_heads, num_kv_heads, pruned) == expected
            assert gqa.gqa_kept_per_group(num_heads, num_kv_heads, pruned) == modeling_llama.gqa_kept_per_group(
                num_heads, num_kv_heads, pruned)


@pytest.mark.parametrize("model", MODELS)
def test_the_library_reads_prunes_and_folds_a_decoder(model):
    torch.manual_seed(0)
    m = make_model(model, self_slimming=True, inter_slimming=True)
    heads, neurons = slimming.read_coefficients(m)
    assert heads.shape == (LAYERS, HEADS) and neurons.shape == (LAYERS, INTER)
    assert slimming.model_shape(m) == {"model_type": model, "layers": LAYERS, "heads": HEADS, "intermediate": INTER,
                                       "kv_heads": 2}
    dense_flops = slimming.encoder_flops_per_token(m, seq_len=9)
    bad = {"pruned_heads": {"1": [0]}, "pruned_intermediate": {}}
    with pytest.raises(EarlyBirdError, match=r"layer 1 would keep \[3, 4\] query heads per key/value group"):
        slimming.apply_plan(m, bad)
    slimming.apply_plan(m, {"pruned_heads": {str(k): v for k, v in SAME_PER_GROUP.items()},
                            "pruned_intermediate": {"0": [1, 2]}})
    assert slimming.kept_sizes(m) == {"heads": [6, 4, 8, 2], "intermediate": [INTER - 2, INTER, INTER, INTER],
                                      "kv_heads": [2, 2, 2, 2]}
    # per layer: q/o over the query heads, k/v over the key/value heads, 3 gated-MLP linears
    hidden = HIDDEN
    expected = sum(2 * (2 * hidden * (q + kv) * HEAD_DIM + 2 * 9 * q * HEAD_DIM + 3 * hidden * inter)
                   for (q, kv, _), inter in zip(head_counts(m), slimming.kept_sizes(m)["intermediate"]))
    assert slimming.encoder_flops_per_token(m, seq_len=9) == expected < dense_flops
    inputs = make_inputs()
    before = logits(m, inputs)
    slimming.fold_slimming(m)
    assert slimming.coefficient_parameters(m) == []
    torch.testing.assert_close(logits(m, inputs), before, atol=ATOL, rtol=0)


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("kernel", ["cpu_varlen", "flex_without_compile"])
def test_a_pruned_slimmed_decoder_under_flash_unpadding_and_flex_equals_eager(model, kernel, request):
    """Per-layer query and key/value head counts and the coefficients reach flash attention's un-padding (run on CPU
    with a reference varlen kernel) and flex attention (uncompiled) as they reach eager."""
    _, eager = zero_and_prune(model, SAME_PER_GROUP, NEURONS, "eager")
    other = make_model(model, request.getfixturevalue(kernel), config=copy.deepcopy(eager.config))
    other.load_state_dict(eager.state_dict())
    inputs = make_inputs()
    torch.testing.assert_close(logits(other, inputs), logits(eager, inputs), atol=ATOL, rtol=0)
