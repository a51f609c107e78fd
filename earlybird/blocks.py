"""The two prunable blocks of a Transformer layer, and every name each one goes by.

One vocabulary for code and docs. A *block* is ``msa`` (the multi-head self-attention: its units are attention
**heads**) or ``mlp`` (the feed-forward network: its units are intermediate **neurons**). Elsewhere the same block
goes by names that are fixed by formats we do not own or have already written:

| block | unit | flags and model config (prefix) | records `meta.json` | plans (`pruned_*`, `shape`) | model parameter |
|---|---|---|---|---|---|
| `msa` | head | `self` (`--self-slimming`, `--l1-self`, `--self-pruning-ratio`, `config.self_slimming`) | `heads` | `pruned_heads`, `heads` | `self_slimming_coef` |
| `mlp` | neuron | `inter` (`--inter-slimming`, `--l1-inter`, `--inter-pruning-ratio`, `config.inter_slimming`) | `neurons` | `pruned_intermediate`, `intermediate` | `inter_slimming_coef` |

Every module takes these names from here (`BLOCKS["mlp"].plan_key`, ...) instead of spelling them again.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Block:
    name: str  # records, detectors, --block: "msa" / "mlp"
    title: str  # in figures and tables
    prefix: str  # flags and model config: --{prefix}-slimming, --l1-{prefix}, config.{prefix}_slimming
    unit: str  # one of them, in messages
    units: str
    records_key: str  # the size per layer in records' meta.json
    plan_key: str  # the pruned indices in a plan and in the model config
    shape_key: str  # the size per layer in a plan's "shape" and in model_shape()
    coefficient: str  # the slimming parameter of the patched module

    @property
    def slimming_flag(self) -> str:
        """The model-config (and training-flag dest) name that switches this block's slimming on."""
        return f"{self.prefix}_slimming"


MSA = Block(name="msa", title="MSA", prefix="self", unit="head", units="heads", records_key="heads",
            plan_key="pruned_heads", shape_key="heads", coefficient="self_slimming_coef")
MLP = Block(name="mlp", title="MLP", prefix="inter", unit="neuron", units="neurons", records_key="neurons",
            plan_key="pruned_intermediate", shape_key="intermediate", coefficient="inter_slimming_coef")
BLOCKS = {block.name: block for block in (MSA, MLP)}
BLOCK_NAMES = tuple(BLOCKS)
