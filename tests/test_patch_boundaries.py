"""The patch at its boundaries: other transformers models built on the patched modules, attention kernels and padding
sides, the autograd graph of `output_attentions`, pruned structure however it is set, configs shared between models,
and the dtype of the coefficients under `from_pretrained(dtype=...)`."""

import functools
import re
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    AttentionInterface,
    BartConfig,
    BertConfig,
    BertModel,
    DPRConfig,
    DPRContextEncoder,
    DPRQuestionEncoder,
    DPRReader,
    RagConfig,
    RagModel,
    ViTModel,
)
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, flash_attention_mask
from transformers.modeling_flash_attention_utils import _pad_input, _unpad_input, _upad_input

from earlybird import transformers_patch
from test_patch_models import (
    ATOL,
    HEADS,
    INTER,
    LAYERS,
    attention_modules,
    coefficients,
    logits,
    make_config,
    make_inputs,
    make_model,
    randomize_coefficients,
)

MODELS = ["vit", "bert"]


# --- 1. other models that build the patched modules -------------------------------------------------------------

# `from ..bert.modeling_bert import X`, `from ...models.vit import Y`, `from transformers.models.bert.configuration_bert
# import Z`, at module level or inside a function (tokenization modules are not patched)
PATCHED_MODELS = ("bert", "vit", "llama", "qwen3")
RUNTIME_IMPORT = re.compile(
    rf"^\s*from\s+(?:\.\.|\.\.\.models\.|transformers\.models\.)({'|'.join(PATCHED_MODELS)})"
    r"(?:\.(?:modeling|configuration)_\1)?\s+import",
    re.M,
)


def test_every_model_importing_the_patched_modules_is_covered_here():
    """The models whose modeling files import the patched ViT/BERT/Llama/Qwen3 modules at run time (modular_* files
    are sources for code generation, never imported; the many "Copied from transformers.models.llama" are comments):
    each one is built and run by a test below. A transformers upgrade that adds one fails here until it is covered."""
    package = transformers_patch.installed_transformers_dir() / "models"
    importers = {
        path.parent.name
        for path in package.glob("*/*.py")
        if path.parent.name not in PATCHED_MODELS and not path.name.startswith("modular_")
        and RUNTIME_IMPORT.search(path.read_text(encoding="utf-8"))
    }
    assert importers == {"dpr"}


def dpr_config(**extra):
    return DPRConfig(vocab_size=60, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                     intermediate_size=INTER, max_position_embeddings=32, **extra)


@pytest.mark.parametrize("cls", [DPRQuestionEncoder, DPRContextEncoder, DPRReader])
def test_dpr_builds_and_equals_an_unpatched_bert(cls, pristine_modeling):
    """DPR builds its encoder as a `BertModel` from a `DPRConfig`, which knows none of the patch's flags: they are off,
    and the encoder is the unpatched 5.23.0 BERT with the same weights."""
    torch.manual_seed(0)
    dpr = cls(dpr_config()).eval()
    encoder = next(m for m in dpr.modules() if isinstance(m, BertModel))
    assert coefficients(dpr) == []
    pristine_config = BertConfig(**{k: v for k, v in dpr.config.to_dict().items() if k in BertConfig().to_dict()})
    pristine_config._attn_implementation = dpr.config._attn_implementation
    pristine = pristine_modeling("bert").BertModel(pristine_config, add_pooling_layer=False).eval()
    pristine.load_state_dict(encoder.state_dict())
    inputs = make_inputs("bert", masked=True)
    with torch.no_grad():
        got = encoder(**inputs).last_hidden_state
        expected = pristine(**inputs).last_hidden_state
        dpr(**inputs)  # the DPR head on top runs too
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_dpr_encoders_cannot_be_pruned_through_a_dpr_config():
    """The pruned structure lives in `BertConfig.pruned_heads`; a DPRConfig has none, and the DPR model saving it would
    not rebuild the pruned encoder: refused, nothing changed."""
    dpr = DPRQuestionEncoder(dpr_config())
    encoder = dpr.question_encoder.bert_model
    with pytest.raises(ValueError, match="DPRConfig"):
        encoder.prune_heads({0: [1]})
    with pytest.raises(ValueError, match="DPRConfig"):
        encoder.prune_intermediate({0: [1]})
    assert attention_modules(encoder)[0].num_attention_heads == HEADS


def test_rag_over_a_dpr_question_encoder_runs():
    """RAG's question encoder is a DPRQuestionEncoder: the patched BERT under it builds and runs."""
    torch.manual_seed(0)
    generator = BartConfig(vocab_size=60, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                           decoder_attention_heads=2, encoder_ffn_dim=16, decoder_ffn_dim=16, max_position_embeddings=32)
    config = RagConfig.from_question_encoder_generator_configs(dpr_config(), generator, n_docs=2)
    rag = RagModel(config).eval()
    inputs = make_inputs("bert", masked=True)  # 3 questions, 2 documents each
    context = torch.randint(3, 60, (6, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = rag(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], context_input_ids=context,
                  context_attention_mask=torch.ones_like(context), doc_scores=torch.zeros(3, 2),
                  decoder_input_ids=torch.ones(3, 4, dtype=torch.long), output_retrieved=False)
    assert out.logits.shape == (6, 4, 60) and torch.isfinite(out.logits).all()


# --- 2. soft_by_one under flash attention's un-padding and under flex attention ---------------------------------


def flash_varlen_on_cpu(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """What `_flash_attention_forward` does with a padding mask, on CPU: transformers' own `_upad_input` un-pads the
    (batch, heads, seq, dim) tensors, each sequence attends over its `cu_seqlens` slice (the varlen kernel), and
    `_pad_input` pads the output back. Causal in a decoder (each unpadded sequence attends to its own past) and with
    fewer key/value heads than query heads (grouped-query attention), as the flash kernels are."""
    batch, _, q_len, _ = query.shape
    sdpa = functools.partial(torch.nn.functional.scaled_dot_product_attention, scale=scaling, enable_gqa=True,
                             is_causal=getattr(module, "is_causal", False) and q_len > 1)
    q, k, v = (t.transpose(1, 2) for t in (query, key, value))  # flash layout: (batch, seq, heads, dim)
    if attention_mask is None:
        return sdpa(query, key, value).transpose(1, 2), None
    q, k, v, indices_q, (cu_q, cu_k), _ = _upad_input(q, k, v, attention_mask, q_len, _unpad_input)
    pieces = []
    for b in range(batch):
        qs, ks, vs = (t[c[b]:c[b + 1]].transpose(0, 1) for t, c in ((q, cu_q), (k, cu_k), (v, cu_k)))
        pieces.append(sdpa(qs, ks, vs).transpose(0, 1))
    return _pad_input(torch.cat(pieces), indices_q, batch, q_len), None


@pytest.fixture
def cpu_varlen():
    """An attention implementation that runs flash attention's un-padding on CPU, with flash attention's 2D mask."""
    AttentionInterface.register("cpu_varlen", flash_varlen_on_cpu)
    ALL_MASK_ATTENTION_FUNCTIONS.register("cpu_varlen", flash_attention_mask)
    yield "cpu_varlen"
    del AttentionInterface._global_mapping["cpu_varlen"], ALL_MASK_ATTENTION_FUNCTIONS._global_mapping["cpu_varlen"]


def padded_inputs(side):
    inputs = make_inputs("bert", masked=True)
    if side == "left":
        inputs["attention_mask"] = inputs["attention_mask"].flip(-1)
    return inputs


@pytest.mark.parametrize("side", ["right", "left"])
def test_flash_unpadding_hands_the_kernel_the_real_tokens(side):
    """Under flash attention the padding mask is 2D; with the null key its rows must still select exactly the real
    tokens as queries: transformers takes `mask[:, -seq:]` for them, which a null key appended at the end shifts."""
    from transformers.models.bert import modeling_bert

    mask = padded_inputs(side)["attention_mask"]
    batch, seq = mask.shape
    query = torch.randn(batch, seq, HEADS, 8)
    key, value, padded_mask = modeling_bert.add_null_key_value(*torch.randn(2, batch, HEADS, seq, 8), mask)
    _, _, _, indices_q, (cu_q, cu_k), _ = _upad_input(query, key.transpose(1, 2), value.transpose(1, 2), padded_mask,
                                                     seq, _unpad_input)
    assert indices_q.tolist() == mask.flatten().nonzero().flatten().tolist()
    assert (cu_k.diff() == cu_q.diff() + 1).all()  # every sequence's keys: its tokens and the null key


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("side", ["right", "left"])
def test_soft_by_one_under_flash_unpadding_equals_eager(model, side, cpu_varlen):
    torch.manual_seed(0)
    flags = dict(self_slimming=True, inter_slimming=True, soft_by_one=True)
    eager = make_model(model, "eager", **flags)
    randomize_coefficients(eager)
    flash = make_model(model, cpu_varlen, **flags)
    flash.load_state_dict(eager.state_dict())
    inputs = padded_inputs(side) if model == "bert" else make_inputs(model)
    real = inputs.get("attention_mask", torch.ones(3, 17)).bool()
    with torch.no_grad():
        got, expected = (m(**inputs, output_hidden_states=True).hidden_states[-1][real] for m in (flash, eager))
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_soft_by_one_refuses_packed_sequences():
    """Padding-free batches (several sequences packed in one row, `cu_seq_lens_*` given) would share one null key
    between sequences: refused."""
    model = make_model("bert", "sdpa", soft_by_one=True)
    inputs = make_inputs("bert", batch=1)
    cu = torch.tensor([0, 4, 9], dtype=torch.int32)
    with pytest.raises(ValueError, match="packed"):
        model(**inputs, cu_seq_lens_q=cu, cu_seq_lens_k=cu, max_length_q=5, max_length_k=5)


@pytest.fixture
def flex_without_compile(monkeypatch):
    """Flex attention runs uncompiled (its eager reference path): the same results, seconds instead of a minute."""
    monkeypatch.setenv("TORCHDYNAMO_DISABLE", "1")
    return "flex_attention"


@pytest.mark.parametrize("model", MODELS)
def test_soft_by_one_under_flex_attention_equals_eager(model, flex_without_compile):
    torch.manual_seed(0)
    flags = dict(self_slimming=True, soft_by_one=True)
    eager = make_model(model, "eager", **flags)
    randomize_coefficients(eager)
    flex = make_model(model, flex_without_compile, **flags)
    flex.load_state_dict(eager.state_dict())
    inputs = padded_inputs("right") if model == "bert" else make_inputs(model)
    real = inputs.get("attention_mask", torch.ones(3, 17)).bool()
    with torch.no_grad():
        got, expected = (m(**inputs, output_hidden_states=True).hidden_states[-1][real] for m in (flex, eager))
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


# --- 3. output_attentions stays on the autograd graph -------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_soft_by_one_attentions_are_on_the_autograd_graph(model):
    """transformers' `test_retain_grad_hidden_states_attentions`: the attention weights returned are those the output
    is computed from, so a gradient reaches them; they sum to less than 1 (the null key takes the rest)."""
    torch.manual_seed(0)
    slim = make_model(model, "eager", soft_by_one=True)
    out = slim(**make_inputs(model, masked=model == "bert"), output_attentions=True)
    attentions = out.attentions[0]
    attentions.retain_grad()
    out.logits.sum().backward()
    assert attentions.grad is not None and attentions.grad.abs().sum() > 0
    seq = attentions.shape[-2]
    assert attentions.shape[-1] == seq and (attentions.sum(-1) < 1).all()


# --- 4. pruned structure set on a config, whatever its keys --------------------------------------------------------


def pruned_sizes(model):
    heads = [m.num_attention_heads for m in attention_modules(model)]
    ffn = [(layer.mlp if hasattr(layer, "mlp") else layer.intermediate).intermediate_size
           for layer in (model.base_model.layers if hasattr(model.base_model, "layers") else model.base_model.encoder.layer)]
    return heads, ffn


@pytest.mark.parametrize("model", MODELS)
def test_pruned_structure_set_on_a_config_builds_that_structure(model):
    """String keys as JSON holds them, negative layers as transformers 4.x accepted, set after the config was made."""
    config = make_config(model)
    config.pruned_heads = {"0": [1, 2], "-1": [3]}
    config.pruned_intermediate = {"1": [0, 5]}
    built = make_model(model, config=config)
    assert pruned_sizes(built) == ([HEADS - 2, HEADS, HEADS - 1], [INTER, INTER - 2, INTER])
    # and it prunes on from there, in the original numbering, the config then holding plain layer numbers
    built.prune_heads({0: [0]})
    assert built.config.pruned_heads == {0: [0, 1, 2], LAYERS - 1: [3]}
    assert built.config.pruned_intermediate == {1: [0, 5]}


@pytest.mark.parametrize("model", MODELS)
def test_pruned_structure_set_on_a_config_loads_the_pruned_weights(model, tmp_path):
    torch.manual_seed(0)
    pruned = make_model(model, self_slimming=True)
    pruned.prune_heads({0: [1, 2]})
    pruned.prune_intermediate({2: [4]})
    pruned.save_pretrained(tmp_path)
    config = make_config(model, self_slimming=True)
    config.pruned_heads, config.pruned_intermediate = {"0": [2, 1]}, {"2": [4]}
    reloaded, info = type(pruned).from_pretrained(tmp_path, config=config, output_loading_info=True)
    assert not any(info.values())
    inputs = make_inputs(model)
    torch.testing.assert_close(logits(reloaded.eval(), inputs), logits(pruned, inputs), atol=ATOL, rtol=0)


@pytest.mark.parametrize("model", MODELS)
def test_a_bad_pruned_structure_on_a_config_is_refused(model):
    for field, value, message in [
        ("pruned_heads", {"3": [0]}, "layer 3 out of range"),
        ("pruned_heads", {"0": [HEADS]}, r"pruned_heads\[0\]"),
        ("pruned_heads", {"0": list(range(HEADS))}, "every attention head"),
        ("pruned_intermediate", {"-4": [0]}, "layer -4 out of range"),
        ("pruned_intermediate", {"1": [INTER]}, r"pruned_intermediate\[1\]"),
    ]:
        config = make_config(model)
        setattr(config, field, value)
        with pytest.raises(ValueError, match=message):
            make_model(model, config=config)


@pytest.mark.parametrize("model", MODELS)
def test_negative_layers_prune_from_the_end_as_in_transformers_4(model):
    torch.manual_seed(0)
    negative = make_model(model, self_slimming=True, inter_slimming=True)
    positive = make_model(model, self_slimming=True, inter_slimming=True)
    positive.load_state_dict(negative.state_dict())
    negative.prune_heads({-1: [0]})
    negative.prune_intermediate({-3: [2, 3]})
    positive.prune_heads({LAYERS - 1: [0]})
    positive.prune_intermediate({0: [2, 3]})
    assert negative.config.pruned_heads == {LAYERS - 1: [0]} and negative.config.pruned_intermediate == {0: [2, 3]}
    inputs = make_inputs(model)
    torch.testing.assert_close(logits(negative, inputs), logits(positive, inputs), atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match="out of range"):
        negative.prune_heads({-LAYERS - 1: [0]})


@pytest.mark.parametrize("model", MODELS)
def test_a_refused_prune_changes_nothing(model):
    """Layers are checked before any is pruned: a bad entry anywhere leaves the model and its config as they were."""
    slim = make_model(model, self_slimming=True)
    before = {k: v.clone() for k, v in slim.state_dict().items()}
    with pytest.raises(ValueError, match="every attention head"):
        slim.prune_heads({0: [1], 1: list(range(HEADS))})
    with pytest.raises(ValueError, match="neuron indices"):
        slim.prune_intermediate({0: [1], 2: [INTER]})
    after = slim.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert slim.config.pruned_heads == {} and slim.config.pruned_intermediate == {}


# --- 5. models built from one config object ------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_pruning_or_folding_one_model_leaves_its_siblings_alone(model, tmp_path):
    torch.manual_seed(0)
    config = make_config(model, self_slimming=True, inter_slimming=True)
    pruned, sibling, folded = (make_model(model, config=config) for _ in range(3))
    pruned.prune_heads({0: [1]})
    pruned.prune_intermediate({1: [3]})
    folded.fold_slimming()
    assert config.pruned_heads == {} and config.pruned_intermediate == {} and config.self_slimming
    assert sibling.config.pruned_heads == {} and sibling.config.self_slimming
    assert pruned.config.pruned_heads == {0: [1]} and not folded.config.self_slimming
    inputs = make_inputs(model)
    for name, m in (("pruned", pruned), ("sibling", sibling), ("folded", folded)):
        m.save_pretrained(tmp_path / name)
        reloaded, info = type(m).from_pretrained(tmp_path / name, output_loading_info=True)
        assert not any(info.values()), name
        torch.testing.assert_close(logits(reloaded.eval(), inputs), logits(m, inputs), atol=ATOL, rtol=0)


# --- 6. coefficients stay fp32 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("saved_with_coefficients", [True, False])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_coefficients_stay_fp32_under_from_pretrained_dtype(model, saved_with_coefficients, dtype, tmp_path):
    torch.manual_seed(0)
    flags = dict(self_slimming=True, inter_slimming=True)
    make_model(model, **(flags if saved_with_coefficients else {})).save_pretrained(tmp_path)
    half = type(make_model(model)).from_pretrained(tmp_path, dtype=dtype, **flags).eval()
    assert {c.dtype for c in coefficients(half)} == {torch.float32}
    assert all(p.dtype == dtype for n, p in half.named_parameters() if not n.endswith("slimming_coef"))
    with torch.no_grad():
        for coef in coefficients(half):
            coef.fill_(1 - 1e-3)  # a step of slimming: rounds to 1 in bfloat16
    assert all((c < 1).all() for c in coefficients(half))
    inputs = {k: v.to(dtype) if v.is_floating_point() else v for k, v in make_inputs(model).items()}
    with torch.no_grad():
        out = half(**inputs, output_hidden_states=True)
    assert out.logits.dtype == dtype and all(h.dtype == dtype for h in out.hidden_states)  # applied in half


@pytest.mark.parametrize("model", MODELS)
def test_coefficients_are_applied_in_the_autocast_dtype(model, monkeypatch):
    """Under autocast the projections that carry the coefficients (the heads' output projection, the FFN's second
    linear) take and give bfloat16 activations: the fp32 coefficient scales the weight, it does not upcast them."""
    torch.manual_seed(0)
    slim = make_model(model, self_slimming=True, inter_slimming=True)
    modeling = sys.modules[type(slim).__module__]
    scaled = modeling.linear_with_scaled_inputs
    seen = []

    def spy(linear, hidden_states, coef):
        out = scaled(linear, hidden_states, coef)
        seen.append((hidden_states.dtype, out.dtype, coef.dtype))
        return out

    monkeypatch.setattr(modeling, "linear_with_scaled_inputs", spy)
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        slim(**make_inputs(model))
    layers = slim.config.num_hidden_layers
    assert seen == [(torch.bfloat16, torch.bfloat16, torch.float32)] * (2 * layers)  # heads and neurons, every layer
