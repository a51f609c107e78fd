# Copyright 2024 The Qwen team, Alibaba Group and the HuggingFace Inc. team. All rights reserved.
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
"""Qwen3 model configuration"""

from huggingface_hub.dataclasses import strict

from ...configuration_utils import PreTrainedConfig
from ...modeling_rope_utils import RopeParameters
from ...utils import auto_docstring


@auto_docstring(checkpoint="Qwen/Qwen3-8B")
@strict
class Qwen3Config(PreTrainedConfig):
    r"""
    self_slimming (`bool`, *optional*, defaults to `False`):
        Network slimming of the attention: one learnable coefficient per query head, initialised to 1, scaling the
        head's output (the head's input columns of `o_proj`).
    inter_slimming (`bool`, *optional*, defaults to `False`):
        Network slimming of the gated feed-forward block: one learnable coefficient per intermediate neuron, scaling
        its input column of `down_proj`, initialised to 1.
    pruned_heads (`dict[int, list[int]]`, *optional*):
        Query heads removed from each layer, in the original numbering (see `prune_heads`); a key/value head is
        removed with the last query head of its group, and the groups left in a layer keep equally many query heads.
    pruned_intermediate (`dict[int, list[int]]`, *optional*):
        Feed-forward intermediate neurons removed from each layer, in the original numbering (see
        `prune_intermediate`).

    ```python
    >>> from transformers import Qwen3Model, Qwen3Config

    >>> # Initializing a Qwen3 style configuration
    >>> configuration = Qwen3Config()

    >>> # Initializing a model from the Qwen3-8B style configuration
    >>> model = Qwen3Model(configuration)

    >>> # Accessing the model configuration
    >>> configuration = model.config
    ```
    """

    model_type = "qwen3"
    keys_to_ignore_at_inference = ["past_key_values"]

    # Default tensor parallel plan for base model `Qwen3`
    base_model_tp_plan = {
        "layers.*.self_attn.q_proj": "colwise",
        "layers.*.self_attn.k_proj": "colwise",
        "layers.*.self_attn.v_proj": "colwise",
        "layers.*.self_attn.q_norm": "replicated_with_grad_allreduce",
        "layers.*.self_attn.k_norm": "replicated_with_grad_allreduce",
        "layers.*.self_attn.o_proj": "rowwise",
        "layers.*.mlp.gate_proj": "colwise",
        "layers.*.mlp.up_proj": "colwise",
        "layers.*.mlp.down_proj": "rowwise",
    }
    base_model_pp_plan = {
        "embed_tokens": (["input_ids"], ["inputs_embeds"]),
        "layers": (["hidden_states", "attention_mask"], ["hidden_states"]),
        "norm": (["hidden_states"], ["hidden_states"]),
    }

    vocab_size: int = 151936
    hidden_size: int = 4096
    intermediate_size: int = 22016
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = 32
    head_dim: int = 128
    hidden_act: str = "silu"
    max_position_embeddings: int = 32768
    initializer_range: float = 0.02
    rms_norm_eps: float = 1e-6
    use_cache: bool = True
    tie_word_embeddings: bool = False
    rope_parameters: RopeParameters | dict | None = None
    attention_bias: bool = False
    use_sliding_window: bool = False
    sliding_window: int | None = 4096
    max_window_layers: int = 28
    layer_types: list[str] | None = None
    attention_dropout: float | int = 0.0
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    # Network slimming and structured pruning
    self_slimming: bool = False
    inter_slimming: bool = False
    pruned_heads: dict[int, list[int]] | dict[str, list[int]] | None = None
    pruned_intermediate: dict[int, list[int]] | dict[str, list[int]] | None = None

    def __post_init__(self, **kwargs):
        # Keys are always strings in JSON: store {layer: sorted original indices}
        self.pruned_heads = {int(k): sorted(int(i) for i in v) for k, v in (self.pruned_heads or {}).items() if v}
        self.pruned_intermediate = {
            int(k): sorted(int(i) for i in v) for k, v in (self.pruned_intermediate or {}).items() if v
        }
        self.sliding_window = self.sliding_window if self.use_sliding_window else None
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads

        if self.layer_types is None:
            self.layer_types = [
                "sliding_attention"
                if self.sliding_window is not None and i >= self.max_window_layers
                else "full_attention"
                for i in range(self.num_hidden_layers)
            ]
        super().__post_init__(**kwargs)


__all__ = ["Qwen3Config"]
