# Copyright 2022 EleutherAI and the HuggingFace Inc. team. All rights reserved.
#
# This code is based on EleutherAI's GPT-NeoX library and the GPT-NeoX
# and OPT implementations in this library. It has been modified from its
# original forms to accommodate minor architectural differences compared
# to GPT-NeoX and OPT used by the Meta AI team that trained the model.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
import copy
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ... import initialization as init
from ...activations import ACT2FN
from ...cache_utils import Cache, DynamicCache
from ...generation import GenerationMixin
from ...integrations import use_kernel_forward_from_hub, use_kernelized_func
from ...masking_utils import create_causal_mask
from ...modeling_layers import (
    GenericForQuestionAnswering,
    GenericForSequenceClassification,
    GenericForTokenClassification,
    GradientCheckpointingLayer,
)
from ...modeling_outputs import (
    BaseModelOutputWithPast,
    CausalLMOutputWithPast,
)
from ...modeling_rope_utils import ROPE_INIT_FUNCTIONS, dynamic_rope_update
from ...modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel, slice_logits_to_keep
from ...processing_utils import Unpack
from ...pytorch_utils import prune_linear_layer
from ...utils import TransformersKwargs, auto_docstring, can_return_tuple, logging
from ...utils.generic import merge_with_config_defaults
from ...utils.output_capturing import capture_outputs
from .configuration_llama import LlamaConfig


logger = logging.get_logger(__name__)


@use_kernel_forward_from_hub("RMSNorm")
class LlamaRMSNorm(nn.Module):
    def __init__(self, hidden_size, eps: float = 1e-6) -> None:
        """
        LlamaRMSNorm is equivalent to T5LayerNorm
        """
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)

    def extra_repr(self):
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class LlamaRotaryEmbedding(nn.Module):
    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.max_seq_len_cached = config.max_position_embeddings
        self.original_max_seq_len = config.max_position_embeddings

        self.config = config

        self.rope_type = self.config.rope_parameters["rope_type"]
        rope_init_fn: Callable = self.compute_default_rope_parameters
        if self.rope_type != "default":
            rope_init_fn = ROPE_INIT_FUNCTIONS[self.rope_type]
        inv_freq, self.attention_scaling = rope_init_fn(self.config)

        self.inv_freq = nn.Buffer(inv_freq, persistent=False)
        self.original_inv_freq = nn.Buffer(inv_freq.clone(), persistent=False)

    @staticmethod
    def compute_default_rope_parameters(config: LlamaConfig, **kwargs) -> tuple[torch.Tensor, float]:
        """
        Computes the inverse frequencies according to the original RoPE implementation
        Args:
            config ([`~transformers.PreTrainedConfig`]):
                The model configuration.
        Returns:
            Tuple of (`torch.Tensor`, `float`), containing the inverse frequencies for the RoPE embeddings and the
            post-processing scaling factor applied to the computed cos/sin (unused in this type of RoPE).
        """
        base = config.rope_parameters["rope_theta"]
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads

        attention_factor = 1.0  # Unused in this type of RoPE
        # Compute the inverse frequencies
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        return inv_freq, attention_factor

    @torch.no_grad()
    @dynamic_rope_update  # power user: used with advanced RoPE types (e.g. dynamic rope)
    def forward(self, x, position_ids):
        freqs = position_ids[..., None].float() * self.inv_freq.to(device=x.device, dtype=torch.float)
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = emb.cos() * self.attention_scaling
        sin = emb.sin() * self.attention_scaling

        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


def rotate_half(x):
    """Rotates half the hidden dims of the input."""
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


@use_kernel_forward_from_hub("rotary_pos_emb")
def apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1):
    """Applies Rotary Position Embedding to the query and key tensors.

    Args:
        q (`torch.Tensor`): The query tensor.
        k (`torch.Tensor`): The key tensor.
        cos (`torch.Tensor`): The cosine part of the rotary embedding.
        sin (`torch.Tensor`): The sine part of the rotary embedding.
        unsqueeze_dim (`int`, *optional*, defaults to 1):
            The 'unsqueeze_dim' argument specifies the dimension along which to unsqueeze cos[position_ids] and
            sin[position_ids] so that they can be properly broadcasted to the dimensions of q and k. For example, note
            that cos[position_ids] and sin[position_ids] have the shape [batch_size, seq_len, head_dim]. Then, if q and
            k have the shape [batch_size, heads, seq_len, head_dim], then setting unsqueeze_dim=1 makes
            cos[position_ids] and sin[position_ids] broadcastable to the shapes of q and k. Similarly, if q and k have
            the shape [batch_size, seq_len, heads, head_dim], then set unsqueeze_dim=2.
    Returns:
        `tuple(torch.Tensor)` comprising of the query and key tensors rotated using the Rotary Position Embedding.
    """
    cos = cos.unsqueeze(unsqueeze_dim)
    sin = sin.unsqueeze(unsqueeze_dim)
    q_embed = (q * cos) + (rotate_half(q) * sin)
    k_embed = (k * cos) + (rotate_half(k) * sin)
    return q_embed, k_embed


# Copied from transformers.models.vit.modeling_vit.pruned_layer_index
def pruned_layer_index(layer: int | str, num_layers: int, where: str) -> int:
    """A layer of `prune_heads`/`prune_intermediate` or of the config's pruned structure: an `int` or, as JSON holds
    it, a `str`; negative counts from the last layer, as transformers 4.x accepted."""
    index = int(layer)
    if not -num_layers <= index < num_layers:
        raise ValueError(f"{where}: layer {layer} out of range: the model has {num_layers} layers.")
    return index % num_layers


# Copied from transformers.models.vit.modeling_vit.pruned_in_config
def pruned_in_config(config, name: str, size: int) -> dict[int, set[int]]:
    """
    `config.pruned_heads` or `config.pruned_intermediate` (`name`) as `{layer: original indices}`, however it was set
    (see `pruned_layer_index`); indices must be in `[0, size)`. Another model's config (e.g. `DPRConfig`) has no such
    field: nothing is pruned.
    """
    structure = {}
    for layer, indices in (getattr(config, name, None) or {}).items():
        index = pruned_layer_index(layer, config.num_hidden_layers, f"config.{name}")
        indices = {int(i) for i in indices}
        if not all(0 <= i < size for i in indices):
            raise ValueError(f"config.{name}[{layer}]: indices must be in [0, {size}).")
        structure.setdefault(index, set()).update(indices)
    return structure


# Copied from transformers.models.vit.modeling_vit.linear_with_scaled_inputs
def linear_with_scaled_inputs(linear: nn.Linear, hidden_states: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """
    `linear` applied to `hidden_states` whose input features are scaled by group, group g (a head's `head_dim`
    features, or one intermediate neuron) by `coef[g]`: computed as `linear` with its weight columns scaled, the same
    output without an activation-sized product nor a second saved activation (one pass over the weight, whatever the
    batch; its backward gives `coef` its gradient from the weight gradient that is needed anyway).
    """
    scale = coef.to(linear.weight.dtype).repeat_interleave(linear.in_features // coef.numel())
    return nn.functional.linear(hidden_states, linear.weight * scale, linear.bias)


def gqa_groups(num_heads: int, num_kv_heads: int) -> list[list[int]]:
    """The query heads that share each key/value head (grouped-query attention): group g holds heads
    `g * n, ..., g * n + n - 1` with `n = num_heads // num_kv_heads`, as `repeat_kv` lays them out."""
    if num_heads % num_kv_heads:
        raise ValueError(f"{num_heads} query heads cannot be grouped over {num_kv_heads} key/value heads.")
    size = num_heads // num_kv_heads
    return [list(range(group * size, (group + 1) * size)) for group in range(num_kv_heads)]


def gqa_kept_per_group(num_heads: int, num_kv_heads: int, pruned_heads: Iterable[int]) -> list[int]:
    """How many query heads each key/value group keeps once `pruned_heads` (original query-head numbering) are gone."""
    pruned_heads = {int(h) for h in pruned_heads}
    return [sum(h not in pruned_heads for h in group) for group in gqa_groups(num_heads, num_kv_heads)]


def is_valid_gqa_pruning(num_heads: int, num_kv_heads: int, pruned_heads: Iterable[int]) -> bool:
    """
    The rule that keeps a pruned layer a grouped-query attention layer: every key/value group keeps either 0 query
    heads (its key/value head goes too) or exactly k, the same k >= 1 for every group that survives. Whole groups
    pruned, the same number of heads pruned in every group, and mixtures of the two are valid; a layer with no head
    left is not.
    """
    return len({kept for kept in gqa_kept_per_group(num_heads, num_kv_heads, pruned_heads) if kept}) == 1


def check_gqa_pruning(num_heads: int, num_kv_heads: int, pruned_heads: Iterable[int], layer_idx: int, where: str):
    """`is_valid_gqa_pruning`, or a one-line `ValueError` naming the layer and the query heads kept per group."""
    kept = gqa_kept_per_group(num_heads, num_kv_heads, pruned_heads)
    if not any(kept):
        raise ValueError(f"{where}: layer {layer_idx}: pruning every attention head of a layer is not supported.")
    if not is_valid_gqa_pruning(num_heads, num_kv_heads, pruned_heads):
        raise ValueError(
            f"{where}: layer {layer_idx}: grouped-query attention would keep {kept} query heads per key/value group; "
            "every group must keep 0 or the same number of query heads."
        )


class LlamaMLP(nn.Module):
    def __init__(self, config, layer_idx=None):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.hidden_size = config.hidden_size
        # intermediate neurons removed by `prune_intermediate`, in the original numbering
        self.pruned_intermediate = pruned_in_config(config, "pruned_intermediate", config.intermediate_size).get(
            layer_idx, set()
        )
        self.intermediate_size = config.intermediate_size - len(self.pruned_intermediate)
        if self.intermediate_size < 1:
            raise ValueError(f"Layer {layer_idx}: pruning every intermediate neuron of a layer is not supported.")
        self.gate_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=config.mlp_bias)
        self.up_proj = nn.Linear(self.hidden_size, self.intermediate_size, bias=config.mlp_bias)
        self.down_proj = nn.Linear(self.intermediate_size, self.hidden_size, bias=config.mlp_bias)
        self.act_fn = ACT2FN[config.hidden_act]
        # network slimming: one coefficient per intermediate neuron, fp32 (`_keep_in_fp32_modules_strict`), applied
        # to `down_proj`'s input columns; any other model's config has it off
        self.inter_slimming_coef = None
        if getattr(config, "inter_slimming", False):
            self.inter_slimming_coef = nn.Parameter(torch.ones(self.intermediate_size, dtype=torch.float32))

    def forward(self, x):
        if self.inter_slimming_coef is None:
            down_proj = self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))
        else:
            # scaling neuron j by c_j is scaling column j of `down_proj`
            down_proj = linear_with_scaled_inputs(
                self.down_proj, self.act_fn(self.gate_proj(x)) * self.up_proj(x), self.inter_slimming_coef
            )
        return down_proj

    def neurons_kept(self, neurons: Iterable[int]) -> list[int]:
        """The neurons left once `neurons` (original numbering) are pruned, as positions in the current numbering."""
        size = self.intermediate_size + len(self.pruned_intermediate)  # original numbering
        neurons = {int(n) for n in neurons}
        if not all(0 <= n < size for n in neurons):
            raise ValueError(f"Layer {self.layer_idx}: neuron indices must be in [0, {size}).")
        current = [n for n in range(size) if n not in self.pruned_intermediate]
        keep = [i for i, n in enumerate(current) if n not in neurons]
        if not keep:
            raise ValueError(f"Layer {self.layer_idx}: pruning every intermediate neuron of a layer is not supported.")
        return keep

    def prune_intermediate(self, neurons: Iterable[int]):
        """Remove intermediate `neurons` (original numbering; already pruned ones are ignored) from the gate, up and
        down projections and the coefficients."""
        neurons = {int(n) for n in neurons}
        keep = self.neurons_kept(neurons)
        if len(keep) == self.intermediate_size:
            return
        index = torch.tensor(keep)
        dtype = self.down_proj.weight.dtype
        self.gate_proj = prune_linear_layer(self.gate_proj, index, dim=0).to(dtype)
        self.up_proj = prune_linear_layer(self.up_proj, index, dim=0).to(dtype)
        self.down_proj = prune_linear_layer(self.down_proj, index, dim=1).to(dtype)
        if self.inter_slimming_coef is not None:
            self.inter_slimming_coef = nn.Parameter(self.inter_slimming_coef.detach()[keep].clone())
        self.intermediate_size = len(keep)
        self.pruned_intermediate |= neurons

    @torch.no_grad()
    def fold_slimming(self):
        """Multiply the neuron coefficients into `down_proj`'s columns and remove them; the output is unchanged."""
        if self.inter_slimming_coef is not None:
            self.down_proj.weight.mul_(self.inter_slimming_coef.detach()[None, :].to(self.down_proj.weight.dtype))
            self.inter_slimming_coef = None


def repeat_kv(hidden_states: torch.Tensor, n_rep: int) -> torch.Tensor:
    """
    This is the equivalent of torch.repeat_interleave(x, dim=1, repeats=n_rep). The hidden states go from (batch,
    num_key_value_heads, seqlen, head_dim) to (batch, num_attention_heads, seqlen, head_dim)
    """
    batch, num_key_value_heads, slen, head_dim = hidden_states.shape
    if n_rep == 1:
        return hidden_states
    hidden_states = hidden_states[:, :, None, :, :].expand(batch, num_key_value_heads, n_rep, slen, head_dim)
    return hidden_states.reshape(batch, num_key_value_heads * n_rep, slen, head_dim)


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
):
    key_states = repeat_kv(key, module.num_key_value_groups)
    value_states = repeat_kv(value, module.num_key_value_groups)

    attn_weights = torch.matmul(query, key_states.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask

    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value_states)
    attn_output = attn_output.transpose(1, 2).contiguous()

    return attn_output, attn_weights


@use_kernelized_func(apply_rotary_pos_emb)
class LlamaAttention(nn.Module):
    """Multi-headed attention from 'Attention Is All You Need' paper"""

    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        self.head_dim = getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)
        # query heads removed by `prune_heads`, in the original numbering; a key/value head goes with the last query
        # head of its group, and every group left keeps the same number of query heads (`is_valid_gqa_pruning`)
        self.pruned_heads = pruned_in_config(config, "pruned_heads", config.num_attention_heads).get(layer_idx, set())
        kept = gqa_kept_per_group(config.num_attention_heads, config.num_key_value_heads, self.pruned_heads)
        check_gqa_pruning(
            config.num_attention_heads, config.num_key_value_heads, self.pruned_heads, layer_idx, "config.pruned_heads"
        )
        self.num_heads = sum(kept)
        self.num_key_value_heads = sum(1 for k in kept if k)
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.scaling = self.head_dim**-0.5
        self.attention_dropout = config.attention_dropout
        self.is_causal = True

        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=config.attention_bias)
        self.k_proj = nn.Linear(
            config.hidden_size, self.num_key_value_heads * self.head_dim, bias=config.attention_bias
        )
        self.v_proj = nn.Linear(
            config.hidden_size, self.num_key_value_heads * self.head_dim, bias=config.attention_bias
        )
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.attention_bias)
        # network slimming: one coefficient per query head, fp32 whatever the default dtype
        # (`_keep_in_fp32_modules_strict`), applied to `o_proj`'s input columns; any other model's config has it off
        self.self_slimming_coef = None
        if getattr(config, "self_slimming", False):
            self.self_slimming_coef = nn.Parameter(torch.ones(self.num_heads, dtype=torch.float32))

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        cos, sin = position_embeddings
        query_states, key_states = apply_rotary_pos_emb(query_states, key_states, cos, sin)

        if past_key_values is not None:
            key_states, value_states = past_key_values.update(key_states, value_states, self.layer_idx)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )

        attn_output, attn_weights = attention_interface(
            self,
            query_states,
            key_states,
            value_states,
            attention_mask,
            dropout=0.0 if not self.training else self.attention_dropout,
            scaling=self.scaling,
            **kwargs,
        )

        attn_output = attn_output.reshape(*input_shape, -1).contiguous()
        if self.self_slimming_coef is None:
            attn_output = self.o_proj(attn_output)
        else:
            # head h's output times c_h, as `o_proj`'s columns of head h times c_h: whatever the attention kernel
            attn_output = linear_with_scaled_inputs(self.o_proj, attn_output, self.self_slimming_coef)
        return attn_output, attn_weights

    def heads_kept(self, heads: Iterable[int]) -> tuple[list[int], list[int]]:
        """The query heads and key/value heads left once `heads` (original query-head numbering) are pruned, as
        positions in the current numbering; a pruning that breaks `is_valid_gqa_pruning` is refused."""
        num_heads, num_kv_heads = self.config.num_attention_heads, self.config.num_key_value_heads
        heads = {int(h) for h in heads}
        if not all(0 <= h < num_heads for h in heads):
            raise ValueError(f"Layer {self.layer_idx}: head indices must be in [0, {num_heads}).")
        check_gqa_pruning(num_heads, num_kv_heads, self.pruned_heads | heads, self.layer_idx, "prune_heads")
        current = [h for h in range(num_heads) if h not in self.pruned_heads]
        keep = [i for i, h in enumerate(current) if h not in heads]
        groups = gqa_groups(num_heads, num_kv_heads)
        current_groups = [g for g, group in enumerate(groups) if set(group) - self.pruned_heads]
        keep_groups = [i for i, g in enumerate(current_groups) if set(groups[g]) - self.pruned_heads - heads]
        return keep, keep_groups

    def prune_heads(self, heads: Iterable[int]):
        """Remove query `heads` (original numbering; already pruned ones are ignored) from q_proj, o_proj and the
        coefficients, and the key/value heads of the groups left without a query head from k_proj and v_proj."""
        heads = {int(h) for h in heads}
        keep, keep_groups = self.heads_kept(heads)
        if len(keep) == self.num_heads:
            return
        size = self.head_dim
        index = (torch.tensor(keep)[:, None] * size + torch.arange(size)).flatten()
        kv_index = (torch.tensor(keep_groups)[:, None] * size + torch.arange(size)).flatten()
        dtype = self.q_proj.weight.dtype
        self.q_proj = prune_linear_layer(self.q_proj, index, dim=0).to(dtype)
        self.k_proj = prune_linear_layer(self.k_proj, kv_index, dim=0).to(dtype)
        self.v_proj = prune_linear_layer(self.v_proj, kv_index, dim=0).to(dtype)
        self.o_proj = prune_linear_layer(self.o_proj, index, dim=1).to(dtype)
        if self.self_slimming_coef is not None:
            self.self_slimming_coef = nn.Parameter(self.self_slimming_coef.detach()[keep].clone())
        self.num_heads, self.num_key_value_heads = len(keep), len(keep_groups)
        self.num_key_value_groups = self.num_heads // self.num_key_value_heads
        self.pruned_heads |= heads

    @torch.no_grad()
    def fold_slimming(self):
        """Multiply the head coefficients into `o_proj`'s columns and remove them; the output is unchanged."""
        if self.self_slimming_coef is not None:
            scale = self.self_slimming_coef.detach().repeat_interleave(self.head_dim)
            self.o_proj.weight.mul_(scale[None, :].to(self.o_proj.weight.dtype))
            self.self_slimming_coef = None


class LlamaDecoderLayer(GradientCheckpointingLayer):
    def __init__(self, config: LlamaConfig, layer_idx: int):
        super().__init__()
        self.hidden_size = config.hidden_size

        self.self_attn = LlamaAttention(config=config, layer_idx=layer_idx)

        self.mlp = LlamaMLP(config, layer_idx)
        self.input_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.post_attention_layernorm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool | None = False,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.input_layernorm(hidden_states)
        # Self Attention
        hidden_states, _ = self.self_attn(
            hidden_states=hidden_states,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
            position_embeddings=position_embeddings,
            **kwargs,
        )
        hidden_states = residual + hidden_states

        # Fully Connected
        residual = hidden_states
        hidden_states = self.post_attention_layernorm(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = residual + hidden_states
        return hidden_states


@auto_docstring
class LlamaPreTrainedModel(PreTrainedModel):
    config: LlamaConfig
    base_model_prefix = "model"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LlamaDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True

    _can_compile_fullgraph = True
    _supports_attention_backend = True
    _can_record_outputs = {
        "hidden_states": LlamaDecoderLayer,
        "attentions": LlamaAttention,
    }
    # checkpoints saved without slimming load with the coefficients at 1
    _keys_to_ignore_on_load_missing = [r"slimming_coef"]

    def post_init(self):
        # the slimming coefficients stay fp32 under `from_pretrained(..., dtype=bfloat16 or float16)` (in half precision
        # a step of 1e-3 from 1 rounds back to 1): named where they exist, as transformers checks every name it is given
        self._keep_in_fp32_modules_strict = {
            name.rsplit(".", 1)[-1] for name, _ in self.named_parameters() if name.endswith("slimming_coef")
        }
        super().post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, LlamaAttention) and module.self_slimming_coef is not None:
            init.ones_(module.self_slimming_coef)
        elif isinstance(module, LlamaMLP) and module.inter_slimming_coef is not None:
            init.ones_(module.inter_slimming_coef)

    def _get_static_cache_init_shape(self):
        # a pruned model's layers have their own number of key/value heads: a static cache initialised ahead of the
        # first forward gets one per layer (lazily initialised, each layer takes it from its key states anyway); under
        # tensor parallelism the per-layer counts need not shard evenly: left to the lazy initialisation
        shape = super()._get_static_cache_init_shape()
        if shape is None or not getattr(self.config, "pruned_heads", None):
            return shape
        if (getattr(self, "_tp_size", None) or 1) > 1:
            return None
        return [layer.self_attn.num_key_value_heads for layer in self.base_model.layers], shape[1]

    # Copied from transformers.models.bert.modeling_bert.BertPreTrainedModel._own_config with Bert->Llama
    def _own_config(self, change: str) -> LlamaConfig:
        """
        The config records the structure that pruning and folding (`change`) alter: refuse another model's config,
        which cannot hold it (e.g. the `DPRConfig` of a DPR encoder), and give this model a copy of its own first, so
        that other models built from the same config object keep theirs.
        """
        if not isinstance(self.config, self.config_class):
            raise ValueError(
                f"{change}: this model's structure is kept in a {self.config_class.__name__}, but its config is a "
                f"{type(self.config).__name__}; prune or fold a model built from a {self.config_class.__name__}."
            )
        shared, own = self.config, copy.deepcopy(self.config)
        for module in self.modules():
            if getattr(module, "config", None) is shared:
                module.config = own
        return own

    def _record_pruned_structure(self, config):
        """Write the layers' pruned heads and neurons into `config` as plain `{layer: sorted original indices}`; each
        layer's query and key/value head counts follow from its pruned query heads (`gqa_kept_per_group`)."""
        layers = self.base_model.layers
        heads = {i: sorted(layer.self_attn.pruned_heads) for i, layer in enumerate(layers)}
        neurons = {i: sorted(layer.mlp.pruned_intermediate) for i, layer in enumerate(layers)}
        config.pruned_heads = {i: indices for i, indices in heads.items() if indices}
        config.pruned_intermediate = {i: indices for i, indices in neurons.items() if indices}

    def prune_heads(self, heads_to_prune: dict[int, Iterable[int]]):
        """
        Physically remove query heads: `{layer: [head, ...]}` in the original query-head numbering (a negative layer
        counts from the last). A key/value group left with no query head loses its key/value head; every group left in
        a layer must keep the same number of query heads (`is_valid_gqa_pruning`). Pruning twice works and already
        pruned heads are ignored; the structure is kept in `config.pruned_heads` so that `save_pretrained` then
        `from_pretrained` rebuilds the smaller model. Every layer is checked before any is pruned.
        """
        layers = self.base_model.layers
        to_prune = {}
        for layer, heads in heads_to_prune.items():
            to_prune.setdefault(pruned_layer_index(layer, len(layers), "prune_heads"), set()).update(heads)
        for layer, heads in to_prune.items():
            layers[layer].self_attn.heads_kept(heads)
        config = self._own_config("prune_heads")
        for layer, heads in to_prune.items():
            layers[layer].self_attn.prune_heads(heads)
        self._record_pruned_structure(config)

    def prune_intermediate(self, neurons_to_prune: dict[int, Iterable[int]]):
        """
        Physically remove feed-forward intermediate neurons (rows of the gate and up projections, columns of the down
        projection): `{layer: [neuron, ...]}` in the original numbering (a negative layer counts from the last), kept
        in `config.pruned_intermediate`. Pruning twice works and already pruned neurons are ignored; every layer is
        checked before any is pruned.
        """
        layers = self.base_model.layers
        to_prune = {}
        for layer, neurons in neurons_to_prune.items():
            to_prune.setdefault(pruned_layer_index(layer, len(layers), "prune_intermediate"), set()).update(neurons)
        for layer, neurons in to_prune.items():
            layers[layer].mlp.neurons_kept(neurons)
        config = self._own_config("prune_intermediate")
        for layer, neurons in to_prune.items():
            layers[layer].mlp.prune_intermediate(neurons)
        self._record_pruned_structure(config)

    def fold_slimming(self):
        """Multiply every slimming coefficient into the adjacent weights and remove it: a plain model, same outputs."""
        config = self._own_config("fold_slimming")
        for layer in self.base_model.layers:
            layer.self_attn.fold_slimming()
            layer.mlp.fold_slimming()
        config.self_slimming = False
        config.inter_slimming = False


@auto_docstring
class LlamaModel(LlamaPreTrainedModel):
    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.padding_idx = config.pad_token_id
        self.vocab_size = config.vocab_size

        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, self.padding_idx)
        self.layers = nn.ModuleList(
            [LlamaDecoderLayer(config, layer_idx) for layer_idx in range(config.num_hidden_layers)]
        )
        self.norm = LlamaRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = LlamaRotaryEmbedding(config=config)
        self.gradient_checkpointing = False

        # Initialize weights and apply final processing
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs
    @auto_docstring
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) ^ (inputs_embeds is not None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")

        if inputs_embeds is None:
            inputs_embeds: torch.Tensor = self.embed_tokens(input_ids)

        if use_cache and past_key_values is None:
            past_key_values = DynamicCache(config=self.config)

        if position_ids is None:
            past_seen_tokens = past_key_values.get_seq_length() if past_key_values is not None else 0
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device) + past_seen_tokens
            position_ids = position_ids.unsqueeze(0)

        causal_mask = create_causal_mask(
            config=self.config,
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            past_key_values=past_key_values,
            position_ids=position_ids,
        )

        hidden_states = inputs_embeds
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)

        for decoder_layer in self.layers[: self.config.num_hidden_layers]:
            hidden_states = decoder_layer(
                hidden_states,
                attention_mask=causal_mask,
                position_embeddings=position_embeddings,
                position_ids=position_ids,
                past_key_values=past_key_values,
                use_cache=use_cache,
                **kwargs,
            )

        hidden_states = self.norm(hidden_states)
        return BaseModelOutputWithPast(
            last_hidden_state=hidden_states,
            past_key_values=past_key_values,
        )


@auto_docstring
class LlamaForCausalLM(LlamaPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}
    _pp_plan = {"lm_head": (["hidden_states"], ["logits"])}
    _fsdp_plan = {"lm_head": "keep_full_weight"}

    def __init__(self, config: LlamaConfig):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)

        # Initialize weights and apply final processing
        self.post_init()

    @can_return_tuple
    @auto_docstring
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Unpack[TransformersKwargs],
    ) -> CausalLMOutputWithPast:
        r"""
        Example:

        ```python
        >>> from transformers import AutoTokenizer, LlamaForCausalLM

        >>> model = LlamaForCausalLM.from_pretrained("meta-llama/Llama-2-7b-hf")
        >>> tokenizer = AutoTokenizer.from_pretrained("meta-llama/Llama-2-7b-hf")

        >>> prompt = "Hey, are you conscious? Can you talk to me?"
        >>> inputs = tokenizer(prompt, return_tensors="pt")

        >>> # Generate
        >>> generate_ids = model.generate(inputs.input_ids, max_length=30)
        >>> tokenizer.batch_decode(generate_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)[0]
        "Hey, are you conscious? Can you talk to me?\nI'm not conscious, but I can talk to you."
        ```"""
        outputs: BaseModelOutputWithPast = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )

        hidden_states = outputs.last_hidden_state
        hidden_states = slice_logits_to_keep(hidden_states, logits_to_keep)
        logits = self.lm_head(hidden_states)

        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs)

        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


class LlamaForSequenceClassification(GenericForSequenceClassification, LlamaPreTrainedModel): ...


class LlamaForQuestionAnswering(GenericForQuestionAnswering, LlamaPreTrainedModel):
    base_model_prefix = "transformer"  # For BC, where `transformer` was used instead of `model`


class LlamaForTokenClassification(GenericForTokenClassification, LlamaPreTrainedModel): ...


__all__ = [
    "LlamaForCausalLM",
    "LlamaModel",
    "LlamaPreTrainedModel",
    "LlamaForSequenceClassification",
    "LlamaForQuestionAnswering",
    "LlamaForTokenClassification",
]
