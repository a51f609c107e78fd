# Copyright 2021 Google AI and The HuggingFace Inc. team. All rights reserved.
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
"""ViT model configuration"""

from huggingface_hub.dataclasses import strict

from ...configuration_utils import PreTrainedConfig
from ...utils import auto_docstring


@auto_docstring(checkpoint="google/vit-base-patch16-224")
@strict
class ViTConfig(PreTrainedConfig):
    r"""
    encoder_stride (`int`, *optional*, defaults to 16):
        Factor to increase the spatial resolution by in the decoder head for masked image modeling.
    pooler_output_size (`int`, *optional*):
        Dimensionality of the pooler layer. If None, defaults to `hidden_size`.
    pooler_act (`str`, *optional*, defaults to `"tanh"`):
        The activation function to be used by the pooler.
    self_slimming (`bool`, *optional*, defaults to `False`):
        Network slimming of the attention: one learnable coefficient per attention head, initialised to 1.
    inter_slimming (`bool`, *optional*, defaults to `False`):
        Network slimming of the feed-forward block: one learnable coefficient per intermediate neuron, applied between
        the activation and the second linear layer, initialised to 1.
    slim_before (`bool`, *optional*, defaults to `False`):
        Whether the head coefficient scales the attention scores before the softmax (as a per-head scale of the query)
        instead of the head's output after it.
    soft_by_one (`bool`, *optional*, defaults to `False`):
        Softmax off by one, `exp(x_i) / (1 + sum_j exp(x_j))`, computed exactly as attention to one extra all-zero key
        and value (encoder self-attention only).
    pruned_heads (`dict[int, list[int]]`, *optional*):
        Attention heads removed from each layer, in the original numbering (see `prune_heads`).
    pruned_intermediate (`dict[int, list[int]]`, *optional*):
        Feed-forward intermediate neurons removed from each layer, in the original numbering (see
        `prune_intermediate`).

    Example:

    ```python
    >>> from transformers import ViTConfig, ViTModel

    >>> # Initializing a ViT vit-base-patch16-224 style configuration
    >>> configuration = ViTConfig()

    >>> # Initializing a model (with random weights) from the vit-base-patch16-224 style configuration
    >>> model = ViTModel(configuration)

    >>> # Accessing the model configuration
    >>> configuration = model.config
    ```"""

    model_type = "vit"

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float | int = 0.0
    attention_probs_dropout_prob: float | int = 0.0
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    image_size: int | list[int] | tuple[int, int] = 224
    patch_size: int | list[int] | tuple[int, int] = 16
    num_channels: int = 3
    qkv_bias: bool = True
    encoder_stride: int = 16
    pooler_output_size: int | None = None
    pooler_act: str = "tanh"

    # Network slimming and structured pruning
    self_slimming: bool = False
    inter_slimming: bool = False
    slim_before: bool = False
    soft_by_one: bool = False
    pruned_heads: dict[int, list[int]] | dict[str, list[int]] | None = None
    pruned_intermediate: dict[int, list[int]] | dict[str, list[int]] | None = None

    def __post_init__(self, **kwargs):
        self.pooler_output_size = self.pooler_output_size if self.pooler_output_size else self.hidden_size
        # Keys are always strings in JSON: store {layer: sorted original indices}
        self.pruned_heads = {int(k): sorted(int(i) for i in v) for k, v in (self.pruned_heads or {}).items() if v}
        self.pruned_intermediate = {
            int(k): sorted(int(i) for i in v) for k, v in (self.pruned_intermediate or {}).items() if v
        }
        super().__post_init__(**kwargs)


__all__ = ["ViTConfig"]
