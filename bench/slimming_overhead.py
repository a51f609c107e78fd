"""What slimming costs: training-step time of the patched model with both slimmings on vs the unpatched 5.23.0 model.

Same config and weights, forward + backward + AdamW step, measured alternately in one run (these machines are noisy):
the ratio of medians is the figure. Also the eager-attention ratio, which is what a slimming implementation that needs
the attention probabilities costs.

    .venv/bin/python bench/slimming_overhead.py [--quick] [--repeats N] [--threads N] [--out results.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from transformers import BertConfig, ViTConfig  # noqa: E402
from transformers.models.bert.modeling_bert import BertForSequenceClassification  # noqa: E402
from transformers.models.vit.modeling_vit import ViTForImageClassification  # noqa: E402

from earlybird.transformers_patch import import_pristine_modeling  # noqa: E402

SLIM = dict(self_slimming=True, inter_slimming=True)


def cases(quick: bool):
    """(name, patched class, pristine class, config kwargs, input maker)."""
    if quick:
        vit = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32)
        bert = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, vocab_size=1000)
        batch, image, seq = 4, 32, 32
    else:
        vit, bert = dict(image_size=224), dict()  # ViT-Base / BERT-base defaults
        batch, image, seq = 8, 224, 128
    pristine_vit = import_pristine_modeling("vit").ViTForImageClassification
    pristine_bert = import_pristine_modeling("bert").BertForSequenceClassification
    return [
        (
            f"ViT ({'tiny' if quick else 'Base'}, {image}², batch {batch})",
            ViTForImageClassification,
            pristine_vit,
            lambda **kw: ViTConfig(num_labels=10, **vit, **kw),
            lambda: {"pixel_values": torch.randn(batch, 3, image, image), "labels": torch.randint(0, 10, (batch,))},
        ),
        (
            f"BERT ({'tiny' if quick else 'base'}, seq {seq}, batch {batch})",
            BertForSequenceClassification,
            pristine_bert,
            lambda **kw: BertConfig(num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **bert, **kw),
            lambda: {"input_ids": torch.randint(0, 1000, (batch, seq)), "labels": torch.randint(0, 2, (batch,))},
        ),
    ]


def train_step(model, optimizer, inputs):
    start = time.perf_counter()
    loss = model(**inputs).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def measure(case, attn: str, repeats: int) -> dict:
    name, patched_cls, pristine_cls, make_config, make_inputs = case
    torch.manual_seed(0)
    models = {}
    for label, cls, flags in (("unpatched", pristine_cls, {}), ("slimming", patched_cls, SLIM)):
        config = make_config(**flags)
        config._attn_implementation = attn
        models[label] = cls(config).train()
    models["slimming"].load_state_dict(models["unpatched"].state_dict(), strict=False)
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-5) for k, m in models.items()}
    inputs = make_inputs()
    times = {k: [] for k in models}
    for label in models:  # warm-up: allocator, AdamW state
        train_step(models[label], optimizers[label], inputs)
    for rep in range(repeats):
        order = list(models) if rep % 2 == 0 else list(models)[::-1]  # alternate who goes first
        for label in order:
            times[label].append(train_step(models[label], optimizers[label], inputs))
    medians = {k: statistics.median(v) for k, v in times.items()}
    return {"case": name, "attn": attn, **medians, "ratio": medians["slimming"] / medians["unpatched"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny configs, a sub-minute pass")
    parser.add_argument("--repeats", type=int, default=None, help="timed steps per variant (default 10, quick 3)")
    parser.add_argument("--out", help="also write the markdown table to this file")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 is steadiest on a shared machine")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (3 if args.quick else 10)
    rows = [measure(case, attn, repeats) for case in cases(args.quick) for attn in ("sdpa", "eager")]
    lines = [
        f"Slimming overhead: train step (fwd+bwd+AdamW), median of {repeats} alternating steps, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}",
        "",
        "| config | attention | unpatched (s) | patched + both slimmings (s) | ratio |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['case']} | {r['attn']} | {r['unpatched']:.4f} | {r['slimming']:.4f} | {r['ratio']:.3f} |" for r in rows
    ]
    sdpa = {r["case"]: r for r in rows if r["attn"] == "sdpa"}
    eager = {r["case"]: r for r in rows if r["attn"] == "eager"}
    lines.append("")
    for case in sdpa:
        lines.append(
            f"- {case}: eager attention costs {eager[case]['unpatched'] / sdpa[case]['unpatched']:.2f}× "
            f"the sdpa step (what slimming would cost if it forced eager attention)."
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
