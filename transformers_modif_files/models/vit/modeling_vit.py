# Copyright 2021 Google AI, Ross Wightman, The HuggingFace Inc. team. All rights reserved.
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
"""PyTorch ViT model."""

import copy
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from ... import initialization as init
from ...activations import ACT2FN
from ...masking_utils import create_bidirectional_mask
from ...modeling_layers import GradientCheckpointingLayer
from ...modeling_outputs import (
    BaseModelOutputWithPooling,
    ImageClassifierOutput,
    MaskedImageModelingOutput,
)
from ...modeling_utils import ALL_ATTENTION_FUNCTIONS, PreTrainedModel
from ...processing_utils import Unpack
from ...pytorch_utils import prune_linear_layer
from ...utils import TransformersKwargs, auto_docstring, is_torch_flex_attn_available, logging, torch_int
from ...utils.generic import can_return_tuple, merge_with_config_defaults
from ...utils.output_capturing import capture_outputs
from .configuration_vit import ViTConfig


if is_torch_flex_attn_available():
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask


logger = logging.get_logger(__name__)


class ViTPatchEmbeddings(nn.Module):
    """
    This class turns `pixel_values` of shape `(batch_size, num_channels, height, width)` into the initial
    `hidden_states` (patch embeddings) of shape `(batch_size, seq_length, hidden_size)` to be consumed by a
    Transformer.
    """

    def __init__(self, config: ViTConfig):
        super().__init__()
        image_size = config.image_size
        patch_size = config.patch_size
        image_size = image_size if isinstance(image_size, Iterable) else (image_size, image_size)
        patch_size = patch_size if isinstance(patch_size, Iterable) else (patch_size, patch_size)

        self.num_patches = (image_size[1] // patch_size[1]) * (image_size[0] // patch_size[0])
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = config.num_channels
        self.projection = nn.Conv2d(config.num_channels, config.hidden_size, kernel_size=patch_size, stride=patch_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        num_channels = pixel_values.shape[1]
        if num_channels != self.num_channels:
            raise ValueError(
                "Make sure that the channel dimension of the pixel values match with the one set in the configuration."
                f" Expected {self.num_channels} but got {num_channels}."
            )
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class ViTEmbeddings(nn.Module):
    """
    Construct the CLS token, position and patch embeddings. Optionally, also the mask token.
    """

    def __init__(self, config: ViTConfig, use_mask_token: bool = False):
        super().__init__()

        self.cls_token = nn.Parameter(torch.randn(1, 1, config.hidden_size))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size)) if use_mask_token else None
        self.patch_embeddings = ViTPatchEmbeddings(config)
        num_patches = self.patch_embeddings.num_patches
        self.position_embeddings = nn.Parameter(torch.randn(1, num_patches + 1, config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.patch_size = config.patch_size
        self.image_size = self.patch_embeddings.image_size

    def interpolate_pos_encoding(self, embeddings: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """
        This method allows to interpolate the pre-trained position encodings, to be able to use the model on higher resolution
        images. This method is also adapted to support torch.jit tracing.

        Adapted from:
        - https://github.com/facebookresearch/dino/blob/de9ee3df6cf39fac952ab558447af1fa1365362a/vision_transformer.py#L174-L194, and
        - https://github.com/facebookresearch/dinov2/blob/e1277af2ba9496fbadf7aec6eba56e8d882d1e35/dinov2/models/vision_transformer.py#L179-L211
        """

        num_patches = embeddings.shape[1] - 1
        num_positions = self.position_embeddings.shape[1] - 1

        # always interpolate when tracing to ensure the exported model works for dynamic input shapes
        if not torch.jit.is_tracing() and num_patches == num_positions and height == width:
            return self.position_embeddings

        class_pos_embed = self.position_embeddings[:, :1]
        patch_pos_embed = self.position_embeddings[:, 1:]

        dim = embeddings.shape[-1]

        new_height = height // self.patch_size
        new_width = width // self.patch_size

        sqrt_num_positions = torch_int(num_positions**0.5)
        patch_pos_embed = patch_pos_embed.reshape(1, sqrt_num_positions, sqrt_num_positions, dim)
        patch_pos_embed = patch_pos_embed.permute(0, 3, 1, 2)

        patch_pos_embed = nn.functional.interpolate(
            patch_pos_embed,
            size=(new_height, new_width),
            mode="bicubic",
            align_corners=False,
        )

        patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).view(1, -1, dim)

        return torch.cat((class_pos_embed, patch_pos_embed), dim=1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        bool_masked_pos: torch.BoolTensor | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> torch.Tensor:
        batch_size, num_channels, height, width = pixel_values.shape
        embeddings = self.patch_embeddings(pixel_values)

        if bool_masked_pos is not None:
            seq_length = embeddings.shape[1]
            mask_tokens = self.mask_token.expand(batch_size, seq_length, -1)
            # replace the masked visual tokens by mask_tokens
            mask = bool_masked_pos.unsqueeze(-1).type_as(mask_tokens)
            embeddings = embeddings * (1.0 - mask) + mask_tokens * mask

        # add the [CLS] token to the embedded patch tokens
        cls_tokens = self.cls_token.expand(batch_size, -1, -1)
        embeddings = torch.cat((cls_tokens, embeddings), dim=1)

        if interpolate_pos_encoding:
            embeddings = embeddings + self.interpolate_pos_encoding(embeddings, height, width)
        else:
            if height != self.image_size[0] or width != self.image_size[1]:
                raise ValueError(
                    f"Input image size ({height}*{width}) doesn't match model"
                    f" ({self.image_size[0]}*{self.image_size[1]})."
                )
            embeddings = embeddings + self.position_embeddings

        embeddings = self.dropout(embeddings)

        return embeddings


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: Unpack[TransformersKwargs],
):
    if scaling is None:
        scaling = query.size(-1) ** -0.5

    # Take the dot product between "query" and "key" to get the raw attention scores.
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling

    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask

    attn_weights = nn.functional.softmax(attn_weights, dim=-1, dtype=torch.float32).to(query.dtype)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    if getattr(module, "soft_by_one", False):
        # drop the null key of `add_null_key_value` (its value is zero) before the product with the values: the
        # attention weights returned are then the ones the output is computed from, on the autograd graph
        attn_weights, value = attn_weights[..., 1:], value[..., 1:, :]

    attn_output = torch.matmul(attn_weights, value)
    attn_output = attn_output.transpose(1, 2).contiguous()

    return attn_output, attn_weights


def add_null_key_value(
    key: torch.Tensor, value: torch.Tensor, attention_mask: "torch.Tensor | BlockMask | None"
) -> tuple[torch.Tensor, torch.Tensor, "torch.Tensor | BlockMask | None"]:
    """
    Softmax off by one, `exp(x_i) / (1 + sum_j exp(x_j))`, as attention to one extra all-zero key and value: the zero
    key scores 0, adding exactly `exp(0) = 1` to the denominator, and the zero value adds nothing to the output. This is
    exact and numerically stable under every attention implementation (the kernels subtract the running max).

    The null key comes first: flash attention un-pads the queries with the last `seq_len` columns of the padding mask,
    which are then the sequence's own whatever the padding side. The mask, 2D or 4D, attends it in every row; a flex
    attention `BlockMask` is rebuilt one key longer.
    """
    null_key = key.new_zeros(*key.shape[:-2], 1, key.shape[-1])
    null_value = value.new_zeros(*value.shape[:-2], 1, value.shape[-1])
    key, value = torch.cat([null_key, key], dim=-2), torch.cat([null_value, value], dim=-2)
    if attention_mask is None:
        return key, value, None
    if isinstance(attention_mask, torch.Tensor):
        # the null key is always attended: True for boolean masks, 1 for padding masks, 0 for additive masks
        fill = True if attention_mask.dtype == torch.bool else 0 if attention_mask.is_floating_point() else 1
        return key, value, nn.functional.pad(attention_mask, (1, 0), value=fill)
    mask_mod, (q_len, kv_len) = attention_mask.mask_mod, attention_mask.seq_lengths

    def attend_null_key(batch_idx, head_idx, q_idx, kv_idx):
        return (kv_idx == 0) | mask_mod(batch_idx, head_idx, q_idx, (kv_idx - 1).clamp(min=0))

    block_mask = create_block_mask(
        attend_null_key,
        B=attention_mask.shape[0],
        H=None,
        Q_LEN=q_len,
        KV_LEN=kv_len + 1,
        device=attention_mask.kv_num_blocks.device,
        _compile=True,  # as transformers' `flex_attention_mask`
    )
    return key, value, block_mask


def pruned_layer_index(layer: int | str, num_layers: int, where: str) -> int:
    """A layer of `prune_heads`/`prune_intermediate` or of the config's pruned structure: an `int` or, as JSON holds
    it, a `str`; negative counts from the last layer, as transformers 4.x accepted."""
    index = int(layer)
    if not -num_layers <= index < num_layers:
        raise ValueError(f"{where}: layer {layer} out of range: the model has {num_layers} layers.")
    return index % num_layers


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


def linear_with_scaled_inputs(linear: nn.Linear, hidden_states: torch.Tensor, coef: torch.Tensor) -> torch.Tensor:
    """
    `linear` applied to `hidden_states` whose input features are scaled by group, group g (a head's `head_dim`
    features, or one intermediate neuron) by `coef[g]`: computed as `linear` with its weight columns scaled, the same
    output without an activation-sized product nor a second saved activation (one pass over the weight, whatever the
    batch; its backward gives `coef` its gradient from the weight gradient that is needed anyway).
    """
    scale = coef.to(linear.weight.dtype).repeat_interleave(linear.in_features // coef.numel())
    return nn.functional.linear(hidden_states, linear.weight * scale, linear.bias)


class ViTAttention(nn.Module):
    def __init__(self, config: ViTConfig, layer_idx: int = 0):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        # heads removed by `prune_heads`, in the original numbering
        self.pruned_heads = pruned_in_config(config, "pruned_heads", config.num_attention_heads).get(layer_idx, set())
        self.num_attention_heads = config.num_attention_heads - len(self.pruned_heads)
        if self.num_attention_heads < 1:
            raise ValueError(f"Layer {layer_idx}: pruning every attention head of a layer is not supported.")
        self.head_dim = getattr(config, "head_dim", config.hidden_size // config.num_attention_heads)
        self.attention_dropout = config.attention_probs_dropout_prob
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        # softmax off by one (read by `eager_attention_forward`); any other model's config has it off
        self.soft_by_one = getattr(config, "soft_by_one", False)

        self.q_proj = nn.Linear(config.hidden_size, self.num_attention_heads * self.head_dim, bias=config.qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, self.num_attention_heads * self.head_dim, bias=config.qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, self.num_attention_heads * self.head_dim, bias=config.qkv_bias)
        self.o_proj = nn.Linear(self.num_attention_heads * self.head_dim, config.hidden_size, bias=True)
        # network slimming: one coefficient per head, fp32 whatever the default dtype (`_keep_in_fp32_modules_strict`)
        self.self_slimming_coef = None
        if getattr(config, "self_slimming", False):
            self.self_slimming_coef = nn.Parameter(torch.ones(self.num_attention_heads, dtype=torch.float32))

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple[torch.Tensor, torch.Tensor]:
        input_shape = hidden_states.shape[:-1]
        hidden_shape = (*input_shape, -1, self.head_dim)

        query_states = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key_states = self.k_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        value_states = self.v_proj(hidden_states).view(hidden_shape).transpose(1, 2)

        coef = self.self_slimming_coef
        if coef is not None and getattr(self.config, "slim_before", False):
            # scaling the scores of head h before the softmax is scaling its query
            query_states = query_states * coef.to(query_states.dtype).view(1, -1, 1, 1)
        if self.soft_by_one:
            if kwargs.get("cu_seq_lens_k") is not None:
                raise ValueError("`soft_by_one` does not support packed sequences (`cu_seq_lens_k`): pad the batch.")
            key_states, value_states, attention_mask = add_null_key_value(key_states, value_states, attention_mask)

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
        if coef is not None and not getattr(self.config, "slim_before", False):
            # after the softmax: head h's output times c_h, as o_proj's columns of head h times c_h
            attn_output = linear_with_scaled_inputs(self.o_proj, attn_output, coef)
        else:
            attn_output = self.o_proj(attn_output)

        return attn_output, attn_weights

    def heads_kept(self, heads: Iterable[int]) -> list[int]:
        """The heads left once `heads` (original numbering) are pruned, as positions in the current numbering."""
        heads = {int(h) for h in heads}
        if not all(0 <= h < self.config.num_attention_heads for h in heads):
            raise ValueError(f"Layer {self.layer_idx}: head indices must be in [0, {self.config.num_attention_heads}).")
        current = [h for h in range(self.config.num_attention_heads) if h not in self.pruned_heads]
        keep = [i for i, h in enumerate(current) if h not in heads]
        if not keep:
            raise ValueError(f"Layer {self.layer_idx}: pruning every attention head of a layer is not supported.")
        return keep

    def prune_heads(self, heads: Iterable[int]):
        """Remove `heads` (original numbering; already pruned ones are ignored) from q/k/v, o_proj and the coefficients."""
        heads = {int(h) for h in heads}
        keep = self.heads_kept(heads)
        if len(keep) == self.num_attention_heads:
            return
        index = (torch.tensor(keep)[:, None] * self.head_dim + torch.arange(self.head_dim)).flatten()
        dtype = self.q_proj.weight.dtype
        self.q_proj = prune_linear_layer(self.q_proj, index, dim=0).to(dtype)
        self.k_proj = prune_linear_layer(self.k_proj, index, dim=0).to(dtype)
        self.v_proj = prune_linear_layer(self.v_proj, index, dim=0).to(dtype)
        self.o_proj = prune_linear_layer(self.o_proj, index, dim=1).to(dtype)
        if self.self_slimming_coef is not None:
            self.self_slimming_coef = nn.Parameter(self.self_slimming_coef.detach()[keep].clone())
        self.num_attention_heads = len(keep)
        self.pruned_heads |= heads

    @torch.no_grad()
    def fold_slimming(self):
        """Multiply the head coefficients into the adjacent weights and remove them; the output is unchanged."""
        if self.self_slimming_coef is None:
            return
        scale = self.self_slimming_coef.detach().repeat_interleave(self.head_dim)
        if getattr(self.config, "slim_before", False):
            self.q_proj.weight.mul_(scale[:, None].to(self.q_proj.weight.dtype))
            if self.q_proj.bias is not None:
                self.q_proj.bias.mul_(scale.to(self.q_proj.bias.dtype))
        else:
            self.o_proj.weight.mul_(scale[None, :].to(self.o_proj.weight.dtype))
        self.self_slimming_coef = None


class ViTMLP(nn.Module):
    def __init__(self, config: ViTConfig, layer_idx: int = 0):
        super().__init__()
        self.config = config
        self.layer_idx = layer_idx
        # intermediate neurons removed by `prune_intermediate`, in the original numbering
        self.pruned_intermediate = pruned_in_config(config, "pruned_intermediate", config.intermediate_size).get(
            layer_idx, set()
        )
        self.intermediate_size = config.intermediate_size - len(self.pruned_intermediate)
        if self.intermediate_size < 1:
            raise ValueError(f"Layer {layer_idx}: pruning every intermediate neuron of a layer is not supported.")
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc1 = nn.Linear(config.hidden_size, self.intermediate_size)
        self.fc2 = nn.Linear(self.intermediate_size, config.hidden_size)
        # network slimming: one coefficient per intermediate neuron, fp32 (`_keep_in_fp32_modules_strict`)
        self.inter_slimming_coef = None
        if getattr(config, "inter_slimming", False):
            self.inter_slimming_coef = nn.Parameter(torch.ones(self.intermediate_size, dtype=torch.float32))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = self.fc1(hidden_states)
        hidden_states = self.activation_fn(hidden_states)
        if self.inter_slimming_coef is None:
            hidden_states = self.fc2(hidden_states)
        else:
            # scaling neuron j by c_j is scaling column j of fc2
            hidden_states = linear_with_scaled_inputs(self.fc2, hidden_states, self.inter_slimming_coef)

        return hidden_states

    def neurons_kept(self, neurons: Iterable[int]) -> list[int]:
        """The neurons left once `neurons` (original numbering) are pruned, as positions in the current numbering."""
        neurons = {int(n) for n in neurons}
        if not all(0 <= n < self.config.intermediate_size for n in neurons):
            raise ValueError(f"Layer {self.layer_idx}: neuron indices must be in [0, {self.config.intermediate_size}).")
        current = [n for n in range(self.config.intermediate_size) if n not in self.pruned_intermediate]
        keep = [i for i, n in enumerate(current) if n not in neurons]
        if not keep:
            raise ValueError(f"Layer {self.layer_idx}: pruning every intermediate neuron of a layer is not supported.")
        return keep

    def prune_intermediate(self, neurons: Iterable[int]):
        """Remove intermediate `neurons` (original numbering; already pruned ones are ignored) from fc1, fc2 and the coefficients."""
        neurons = {int(n) for n in neurons}
        keep = self.neurons_kept(neurons)
        if len(keep) == self.intermediate_size:
            return
        index = torch.tensor(keep)
        dtype = self.fc1.weight.dtype
        self.fc1 = prune_linear_layer(self.fc1, index, dim=0).to(dtype)
        self.fc2 = prune_linear_layer(self.fc2, index, dim=1).to(dtype)
        if self.inter_slimming_coef is not None:
            self.inter_slimming_coef = nn.Parameter(self.inter_slimming_coef.detach()[keep].clone())
        self.intermediate_size = len(keep)
        self.pruned_intermediate |= neurons

    @torch.no_grad()
    def fold_slimming(self):
        """Multiply the neuron coefficients into fc2 and remove them; the output is unchanged."""
        if self.inter_slimming_coef is None:
            return
        self.fc2.weight.mul_(self.inter_slimming_coef.detach()[None, :].to(self.fc2.weight.dtype))
        self.inter_slimming_coef = None


class ViTLayer(GradientCheckpointingLayer):
    def __init__(self, config: ViTConfig, layer_idx: int = 0):
        super().__init__()
        self.attention = ViTAttention(config, layer_idx)
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = ViTMLP(config, layer_idx)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> torch.Tensor:
        # Self Attention
        residual = hidden_states
        hidden_states = self.layernorm_before(hidden_states)
        hidden_states, _ = self.attention(hidden_states, attention_mask, **kwargs)
        hidden_states = self.dropout(hidden_states)
        hidden_states = hidden_states + residual

        # Fully Connected
        residual = hidden_states
        hidden_states = self.layernorm_after(hidden_states)
        hidden_states = self.mlp(hidden_states)
        hidden_states = self.dropout(hidden_states)
        hidden_states = hidden_states + residual

        return hidden_states


class ViTPooler(nn.Module):
    def __init__(self, config: ViTConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.pooler_output_size)
        self.activation = ACT2FN[config.pooler_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # We "pool" the model by simply taking the hidden state corresponding
        # to the first token.
        first_token_tensor = hidden_states[:, 0]
        pooled_output = self.dense(first_token_tensor)
        pooled_output = self.activation(pooled_output)
        return pooled_output


@auto_docstring
class ViTPreTrainedModel(PreTrainedModel):
    config: ViTConfig
    base_model_prefix = "vit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["ViTEmbeddings", "ViTLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {
        "hidden_states": ViTLayer,
        "attentions": ViTAttention,
    }
    _input_embed_layer = "patch_embeddings"
    # checkpoints saved without slimming load with the coefficients at 1
    _keys_to_ignore_on_load_missing = [r"slimming_coef"]

    def post_init(self):
        # the slimming coefficients stay fp32 under `from_pretrained(..., dtype=bfloat16 or float16)` (in half precision
        # a step of 1e-3 from 1 rounds back to 1; they are applied in the activations' dtype): named where they exist,
        # as transformers checks that every name it is given is one of the model's
        self._keep_in_fp32_modules_strict = {
            name.rsplit(".", 1)[-1] for name, _ in self.named_parameters() if name.endswith("slimming_coef")
        }
        super().post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        """Initialize the weights"""
        super()._init_weights(module)
        if isinstance(module, ViTEmbeddings):
            if module.position_embeddings is not None:
                init.trunc_normal_(module.position_embeddings, mean=0.0, std=self.config.initializer_range)
            init.trunc_normal_(module.cls_token, mean=0.0, std=self.config.initializer_range)
            if module.mask_token is not None:
                init.zeros_(module.mask_token)
        elif isinstance(module, ViTAttention) and module.self_slimming_coef is not None:
            init.ones_(module.self_slimming_coef)
        elif isinstance(module, ViTMLP) and module.inter_slimming_coef is not None:
            init.ones_(module.inter_slimming_coef)

    def _own_config(self, change: str) -> ViTConfig:
        """
        The config records the structure that pruning and folding (`change`) alter: refuse a config of another class,
        which cannot hold it (a ViT built by another model from its own config), and give this model a copy of its own
        first, so that other models built from the same config object keep theirs.
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
        """Write the layers' pruned heads and neurons into `config` as plain `{layer: sorted original indices}`."""
        layers = self.base_model.layers
        heads = {i: sorted(layer.attention.pruned_heads) for i, layer in enumerate(layers)}
        neurons = {i: sorted(layer.mlp.pruned_intermediate) for i, layer in enumerate(layers)}
        config.pruned_heads = {i: indices for i, indices in heads.items() if indices}
        config.pruned_intermediate = {i: indices for i, indices in neurons.items() if indices}

    def prune_heads(self, heads_to_prune: dict[int, Iterable[int]]):
        """
        Physically remove attention heads: `{layer: [head, ...]}` in the original numbering (a negative layer counts
        from the last). Pruning twice works and already pruned heads are ignored; the structure is kept in
        `config.pruned_heads` so that `save_pretrained` then `from_pretrained` rebuilds the smaller model. Pruning
        every head of a layer is refused, and every layer is checked before any is pruned.
        """
        layers = self.base_model.layers
        to_prune = {}
        for layer, heads in heads_to_prune.items():
            to_prune.setdefault(pruned_layer_index(layer, len(layers), "prune_heads"), set()).update(heads)
        for layer, heads in to_prune.items():
            layers[layer].attention.heads_kept(heads)
        config = self._own_config("prune_heads")
        for layer, heads in to_prune.items():
            layers[layer].attention.prune_heads(heads)
        self._record_pruned_structure(config)

    def prune_intermediate(self, neurons_to_prune: dict[int, Iterable[int]]):
        """
        Physically remove feed-forward intermediate neurons: `{layer: [neuron, ...]}` in the original numbering (a
        negative layer counts from the last), kept in `config.pruned_intermediate`. Pruning twice works and already
        pruned neurons are ignored; every layer is checked before any is pruned.
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
            layer.attention.fold_slimming()
            layer.mlp.fold_slimming()
        config.self_slimming = False
        config.inter_slimming = False


@auto_docstring
class ViTModel(ViTPreTrainedModel):
    def __init__(self, config: ViTConfig, add_pooling_layer: bool = True, use_mask_token: bool = False):
        r"""
        add_pooling_layer (bool, *optional*, defaults to `True`):
            Whether to add a pooling layer
        use_mask_token (`bool`, *optional*, defaults to `False`):
            Whether to use a mask token for masked image modeling.
        """
        super().__init__(config)
        self.config = config
        self.embeddings = ViTEmbeddings(config, use_mask_token=use_mask_token)
        self.layers = nn.ModuleList([ViTLayer(config, layer_idx=i) for i in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.pooler = ViTPooler(config) if add_pooling_layer else None
        # Initialize weights and apply final processing
        self.post_init()

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    @auto_docstring
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.BoolTensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> BaseModelOutputWithPooling:
        r"""
        bool_masked_pos (`torch.BoolTensor` of shape `(batch_size, num_patches)`, *optional*):
            Boolean masked positions. Indicates which patches are masked (1) and which aren't (0).
        """
        # Kept for BC, but this should be handled by users on the processed inputs directly.
        expected_dtype = self.embeddings.patch_embeddings.projection.weight.dtype
        if pixel_values.dtype != expected_dtype:
            pixel_values = pixel_values.to(expected_dtype)

        embedding_output = self.embeddings(
            pixel_values, bool_masked_pos=bool_masked_pos, interpolate_pos_encoding=interpolate_pos_encoding
        )
        attention_mask = create_bidirectional_mask(
            config=self.config,
            inputs_embeds=embedding_output,
            attention_mask=attention_mask,
        )
        hidden_states = embedding_output
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask, **kwargs)

        sequence_output = self.layernorm(hidden_states)
        pooled_output = self.pooler(sequence_output) if self.pooler is not None else None

        return BaseModelOutputWithPooling(last_hidden_state=sequence_output, pooler_output=pooled_output)


@auto_docstring(
    custom_intro="""
    ViT Model with a decoder on top for masked image modeling, as proposed in [SimMIM](https://huggingface.co/papers/2111.09886).
    """
)
class ViTForMaskedImageModeling(ViTPreTrainedModel):
    def __init__(self, config: ViTConfig):
        super().__init__(config)

        self.vit = ViTModel(config, add_pooling_layer=False, use_mask_token=True)

        self.decoder = nn.Sequential(
            nn.Conv2d(
                in_channels=config.hidden_size,
                out_channels=config.encoder_stride**2 * config.num_channels,
                kernel_size=1,
            ),
            nn.PixelShuffle(config.encoder_stride),
        )

        # Initialize weights and apply final processing
        self.post_init()

    @can_return_tuple
    @auto_docstring
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        bool_masked_pos: torch.BoolTensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MaskedImageModelingOutput:
        r"""
        bool_masked_pos (`torch.BoolTensor` of shape `(batch_size, num_patches)`):
            Boolean masked positions. Indicates which patches are masked (1) and which aren't (0).

        Examples:
        ```python
        >>> from transformers import AutoImageProcessor, ViTForMaskedImageModeling
        >>> import torch
        >>> from PIL import Image
        >>> from huggingface_hub.utils import httpx
        >>> from io import BytesIO

        >>> url = "http://images.cocodataset.org/val2017/000000039769.jpg"
        >>> with httpx.stream("GET", url) as response:
        ...     image = Image.open(BytesIO(response.read()))

        >>> image_processor = AutoImageProcessor.from_pretrained("google/vit-base-patch16-224-in21k")
        >>> model = ViTForMaskedImageModeling.from_pretrained("google/vit-base-patch16-224-in21k")

        >>> num_patches = (model.config.image_size // model.config.patch_size) ** 2
        >>> pixel_values = image_processor(images=image, return_tensors="pt").pixel_values
        >>> # create random boolean mask of shape (batch_size, num_patches)
        >>> bool_masked_pos = torch.randint(low=0, high=2, size=(1, num_patches)).bool()

        >>> outputs = model(pixel_values, bool_masked_pos=bool_masked_pos)
        >>> loss, reconstructed_pixel_values = outputs.loss, outputs.reconstruction
        >>> list(reconstructed_pixel_values.shape)
        [1, 3, 224, 224]
        ```"""

        if bool_masked_pos is not None and (self.config.patch_size != self.config.encoder_stride):
            raise ValueError(
                "When `bool_masked_pos` is provided, `patch_size` must be equal to `encoder_stride` to ensure that "
                "the reconstructed image has the same dimensions as the input. "
                f"Got `patch_size` = {self.config.patch_size} and `encoder_stride` = {self.config.encoder_stride}."
            )

        outputs: BaseModelOutputWithPooling = self.vit(
            pixel_values,
            bool_masked_pos=bool_masked_pos,
            interpolate_pos_encoding=interpolate_pos_encoding,
            attention_mask=attention_mask,
            **kwargs,
        )

        sequence_output = outputs.last_hidden_state

        # Reshape to (batch_size, num_channels, height, width)
        sequence_output = sequence_output[:, 1:]
        batch_size, sequence_length, num_channels = sequence_output.shape
        height = width = math.floor(sequence_length**0.5)
        sequence_output = sequence_output.permute(0, 2, 1).reshape(batch_size, num_channels, height, width)

        # Reconstruct pixel values
        reconstructed_pixel_values = self.decoder(sequence_output)

        masked_im_loss = None
        if bool_masked_pos is not None:
            size = self.config.image_size // self.config.patch_size
            bool_masked_pos = bool_masked_pos.reshape(-1, size, size)
            mask = (
                bool_masked_pos.repeat_interleave(self.config.patch_size, 1)
                .repeat_interleave(self.config.patch_size, 2)
                .unsqueeze(1)
                .contiguous()
            )
            reconstruction_loss = nn.functional.l1_loss(pixel_values, reconstructed_pixel_values, reduction="none")
            masked_im_loss = (reconstruction_loss * mask).sum() / (mask.sum() + 1e-5) / self.config.num_channels

        return MaskedImageModelingOutput(
            loss=masked_im_loss,
            reconstruction=reconstructed_pixel_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


@auto_docstring(
    custom_intro="""
    ViT Model transformer with an image classification head on top (a linear layer on top of the final hidden state of
    the [CLS] token) e.g. for ImageNet.

    <Tip>

        Note that it's possible to fine-tune ViT on higher resolution images than the ones it has been trained on, by
        setting `interpolate_pos_encoding` to `True` in the forward of the model. This will interpolate the pre-trained
        position embeddings to the higher resolution.

    </Tip>
    """
)
class ViTForImageClassification(ViTPreTrainedModel):
    def __init__(self, config: ViTConfig):
        super().__init__(config)

        self.num_labels = config.num_labels
        self.vit = ViTModel(config, add_pooling_layer=False)

        # Classifier head
        self.classifier = nn.Linear(config.hidden_size, config.num_labels) if config.num_labels > 0 else nn.Identity()

        # Initialize weights and apply final processing
        self.post_init()

    @can_return_tuple
    @auto_docstring
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        interpolate_pos_encoding: bool | None = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> ImageClassifierOutput:
        outputs: BaseModelOutputWithPooling = self.vit(
            pixel_values,
            interpolate_pos_encoding=interpolate_pos_encoding,
            attention_mask=attention_mask,
            **kwargs,
        )

        sequence_output = outputs.last_hidden_state
        pooled_output = sequence_output[:, 0, :]
        logits = self.classifier(pooled_output)

        loss = None
        if labels is not None:
            loss = self.loss_function(labels, logits, self.config, **kwargs)

        return ImageClassifierOutput(
            loss=loss,
            logits=logits,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )


__all__ = ["ViTForImageClassification", "ViTForMaskedImageModeling", "ViTModel", "ViTPreTrainedModel"]
