"""The model side: read slimming coefficients, the L1 penalty, apply a pruning plan, fold, count FLOPs.

Works on any patched ViT, BERT, Llama or Qwen3 model (`...For...` classes included), through the patch's own methods
(`prune_heads`, `prune_intermediate`, `fold_slimming`). In a decoder with grouped-query attention a head is a query
head, and a plan must keep every layer a grouped-query attention layer (`is_valid_gqa_pruning`, the patch's rule).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .blocks import BLOCKS, MLP, MSA
from .errors import EarlyBirdError
from .plans import validate_plan


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a patched ViT or decoder LLM (`layers`) or BERT (`encoder.layer`)."""
    base = getattr(model, "base_model", model)
    if hasattr(base, "layers"):
        return base.layers
    if hasattr(base, "encoder") and hasattr(base.encoder, "layer"):
        return base.encoder.layer
    raise EarlyBirdError(f"{type(model).__name__}: not a ViT, BERT, Llama or Qwen3 model (no layers found).")


def _attention(layer: nn.Module) -> nn.Module:
    """The module holding a layer's heads and their coefficient: ViT's attention, BERT's attention.self, a decoder's
    self_attn."""
    if hasattr(layer, "self_attn"):
        return layer.self_attn
    return layer.attention if hasattr(layer.attention, MSA.coefficient) else layer.attention.self


def _num_heads(attention: nn.Module) -> int:
    """The (query) heads an attention module has now: `num_heads` in the decoders, `num_attention_heads` otherwise."""
    return int(getattr(attention, "num_heads", None) or attention.num_attention_heads)


def _ffn(layer: nn.Module) -> nn.Module:
    """The module holding a layer's intermediate neurons and their coefficient: ViT's mlp, BERT's intermediate."""
    return layer.mlp if hasattr(layer, "mlp") else layer.intermediate


def head_coefficients(model: nn.Module) -> list[torch.Tensor]:
    """The per-head coefficient parameters, one per layer (empty when self-slimming is off)."""
    coefs = [getattr(_attention(layer), MSA.coefficient) for layer in encoder_layers(model)]
    return [c for c in coefs if c is not None]


def neuron_coefficients(model: nn.Module) -> list[torch.Tensor]:
    """The per-neuron coefficient parameters, one per layer (empty when inter-slimming is off)."""
    coefs = [getattr(_ffn(layer), MLP.coefficient) for layer in encoder_layers(model)]
    return [c for c in coefs if c is not None]


def kept_sizes(model: nn.Module) -> dict:
    """Heads and FFN neurons each layer still has (model_shape gives the unpruned sizes of the config); a decoder
    with grouped-query attention adds its key/value heads (`kv_heads`)."""
    layers = encoder_layers(model)
    sizes = {MSA.shape_key: [_num_heads(_attention(layer)) for layer in layers],
             MLP.shape_key: [int(_ffn(layer).intermediate_size) for layer in layers]}
    if "kv_heads" in model_shape(model):
        sizes["kv_heads"] = [int(_attention(layer).num_key_value_heads) for layer in layers]
    return sizes


def coefficient_parameters(model: nn.Module) -> list[nn.Parameter]:
    return head_coefficients(model) + neuron_coefficients(model)


def _stack(coefs: list[torch.Tensor], what: str) -> torch.Tensor | None:
    if not coefs:
        return None
    if len({c.shape for c in coefs}) != 1:
        raise EarlyBirdError(f"the {what} coefficients differ in size across layers (a pruned model): nothing to stack.")
    return torch.stack([c.detach() for c in coefs])


@torch.no_grad()
def read_coefficients(model: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(MSA (L, H), MLP (L, I)) coefficients, detached, on the model's device: no host sync."""
    return stack_coefficients(head_coefficients(model), neuron_coefficients(model))


@torch.no_grad()
def stack_coefficients(heads: list, neurons: list) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """`read_coefficients` for coefficient lists found once (`head_coefficients`, `neuron_coefficients`): walking the
    modules is ~1 ms of Python, which a caller reading them every step can keep out of its loop."""
    return _stack(heads, "head"), _stack(neurons, "neuron")


def l1_penalty(model: nn.Module, l1_self: float = 0.0, l1_inter: float = 0.0) -> torch.Tensor | float:
    """`l1_self * sum |head coef| + l1_inter * sum |neuron coef|`, in fp32 whatever the autocast dtype."""
    penalty = 0.0
    for weight, coefs in ((l1_self, head_coefficients(model)), (l1_inter, neuron_coefficients(model))):
        if weight and coefs:
            penalty = penalty + weight * sum(c.float().abs().sum() for c in coefs)
    return penalty


def model_shape(model: nn.Module) -> dict:
    """The unpruned sizes of the config; a decoder with grouped-query attention adds its key/value heads."""
    config = model.config
    shape = {
        "model_type": config.model_type,
        "layers": config.num_hidden_layers,
        MSA.shape_key: config.num_attention_heads,
        MLP.shape_key: config.intermediate_size,
    }
    if getattr(config, "num_key_value_heads", None) is not None:
        shape["kv_heads"] = config.num_key_value_heads
    return shape


def _int_keyed(mapping: Mapping | None) -> dict[int, list[int]]:
    return {int(key): [int(v) for v in values] for key, values in (mapping or {}).items()}


def check_plan_fits(plan: Mapping, model: nn.Module, where: str = "plan"):
    """Refuse a plan whose model type or layer / head / neuron counts do not fit the model, with one clear message.

    A plan may leave out what the model says (its shape, a block with nothing pruned); the rest is checked by
    `plans.validate_plan` against the model's shape.
    """
    shape = model_shape(model)
    # Plans made from our records name the model they came from: a ViT plan does not go on a BERT.
    meta = (plan.get("provenance") or {}).get("model") or {}
    recorded = meta.get("model_type")
    if recorded and recorded != shape["model_type"]:
        raise EarlyBirdError(f"{where} came from a {recorded!r} model but this is a {shape['model_type']!r} model: "
                             "records or plan from a different model?")
    declared = plan.get("shape") or {}
    for key in ("layers", *(block.shape_key for block in BLOCKS.values()), "kv_heads"):
        if declared.get(key) is not None and int(declared[key]) != shape.get(key):  # None: block not recorded
            raise EarlyBirdError(
                f"{where} was made for {declared[key]} {key} but the model has {shape[key]} "
                f"({shape['model_type']}, {shape['layers']} layers x {shape['heads']} heads x "
                f"{shape['intermediate']} neurons): records or plan from a different model?"
            )
    # Index sets or tuples are fine for the model's pruning methods; a plan file holds lists.
    as_lists = {block.plan_key: {key: list(v) if isinstance(v, (tuple, set, frozenset)) else v
                                 for key, v in (plan.get(block.plan_key) or {}).items()}
                for block in BLOCKS.values()}
    validate_plan({**as_lists, "shape": shape}, where)  # the GQA rule too: the model's shape has kv_heads

def apply_plan(model: nn.Module, plan: Mapping, where: str = "plan") -> nn.Module:
    """Physically prune `model` in place as the plan says (original numbering) and return it."""
    check_plan_fits(plan, model, where)
    model.prune_heads(_int_keyed(plan.get(MSA.plan_key)))
    model.prune_intermediate(_int_keyed(plan.get(MLP.plan_key)))
    return model


def fold_slimming(model: nn.Module) -> nn.Module:
    """Multiply the coefficients into the adjacent weights and remove them (a plain smaller model, same outputs).

    Refuses (EarlyBirdError naming the weight) a fold whose products overflow the weights' dtype -- a large
    coefficient folded into a float16 weight -- rather than returning a model with inf weights.
    """
    def non_finite() -> dict:
        return {name: param.dtype for name, param in model.named_parameters()
                if param.is_floating_point() and not torch.isfinite(param).all()}

    had_coefficients = bool(coefficient_parameters(model))
    already = non_finite() if had_coefficients else {}
    model.fold_slimming()
    if had_coefficients:
        made = {name: dtype for name, dtype in non_finite().items() if name not in already}
        if made:
            name, dtype = next(iter(made.items()))
            raise EarlyBirdError(f"folding the slimming coefficients made {name} non-finite ({dtype} overflow: a "
                                 "coefficient too large for this dtype); expected finite products: fold in float32")
    return model


def encoder_flops_per_token(model: nn.Module, seq_len: int) -> int:
    """Multiply-accumulates ×2 of the transformer layers for one token, from the (possibly pruned) shapes.

    Counts the q/k/v/o projections (k and v for the key/value heads under grouped-query attention), the attention
    score and context products (over `seq_len` keys; a causal decoder's average is about half), and the FFN linears
    (three in a gated MLP): what pruning heads and neurons removes. Embeddings and task heads are left out (pruning
    does not touch them).
    """
    hidden = model.config.hidden_size
    flops = 0
    for layer in encoder_layers(model):
        attention = _attention(layer)
        heads = _num_heads(attention)
        kv_heads = getattr(attention, "num_key_value_heads", heads)
        head_dim = getattr(attention, "head_dim", getattr(attention, "attention_head_size", None))
        inner = heads * head_dim
        ffn = _ffn(layer)
        linears = 3 if hasattr(ffn, "gate_proj") else 2
        flops += 2 * (2 * hidden * (inner + kv_heads * head_dim) + 2 * seq_len * inner
                      + linears * hidden * ffn.intermediate_size)
    return flops
