"""What slimming costs: training-step time of the patched model with slimming on vs the unpatched 5.23.0 model.

Same config and weights, forward + backward + AdamW step. The figure is the ratio of a patched step to an unpatched
step taken right next to it (a pair), the order alternating from pair to pair (so a "second step runs warmer" effect
cancels); pairs of the three variants (both slimmings, head coefficients only, neuron coefficients only) are
interleaved. The estimate is the geometric mean of the pair ratios with a 95% t-interval on the mean log-ratio (pairs
are independent; the log makes the ratio symmetric), and a run keeps adding pairs until every interval is within
`--target` (default ±1%) or its time budget is spent, whichever comes first; the table says which. Steps are timed in
CPU time of the process by default (`--clock cpu`): on a shared machine the time the process waits for a core is not
its cost, and it is what made wall-clock ratios move by ±10% from pair to pair here (with one thread, CPU time is the
step's duration on a quiet machine). About 6 GB of memory (four ViT-Base models with their AdamW states). With
`--device cuda` models and inputs are on the GPU and steps are timed with CUDA events (`benchlib.Clock`; `--clock` is
then not used); `--dtype bf16` runs the forward passes under bf16 autocast.

    .venv/bin/python bench/slimming_overhead.py [--quick] [--threads N] [--target 0.01] [--budget-min 14]
        [--min-pairs N] [--max-pairs N] [--clock cpu|wall] [--device cpu|cuda] [--dtype fp32|bf16] [--out results.md]
"""

from __future__ import annotations

import argparse
import gc
import math
import os
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from scipy import stats  # noqa: E402
from transformers import BertConfig, ViTConfig  # noqa: E402
from transformers.models.bert.modeling_bert import BertForSequenceClassification  # noqa: E402
from transformers.models.vit.modeling_vit import ViTForImageClassification  # noqa: E402

from earlybird.transformers_patch import import_pristine_modeling  # noqa: E402

from benchlib import Clock, add_device_arguments, autocast, device_label, resolve_device, to_device  # noqa: E402

VARIANTS = {
    "both": dict(self_slimming=True, inter_slimming=True),
    "heads only": dict(self_slimming=True),
    "neurons only": dict(inter_slimming=True),
}
# (attention implementation, variants timed under it): the breakdown under sdpa, the default; eager for the total
BLOCKS = (("sdpa", tuple(VARIANTS)), ("eager", ("both",)))


def cases(quick: bool):
    """(name, patched class, pristine class, config maker, input maker)."""
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


CLOCKS = tuple(Clock.CPU_CLOCKS)


def train_step(model, optimizer, inputs, clock: Clock, dtype: str = "fp32") -> float:
    with clock.span() as span:
        with autocast(clock.device, dtype):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return span.seconds


def interval(ratios: list[float]) -> tuple[float, float, float]:
    """Geometric mean of the ratios and its 95% t-interval (on the mean of the log-ratios)."""
    logs = np.log(ratios)
    mean = float(logs.mean())
    half = float(stats.t.ppf(0.975, len(logs) - 1) * logs.std(ddof=1) / math.sqrt(len(logs)))
    return math.exp(mean), math.exp(mean - half), math.exp(mean + half)


def settled(ratios: list[float], target: float) -> bool:
    _, low, high = interval(ratios)
    return high / low <= (1 + target) / (1 - target)  # the whole interval is no wider than ±target


def measure(case, attn: str, variants, args, deadline: float) -> list[dict]:
    """Pairs (unpatched, variant) in alternating order until every variant is settled, max_pairs or the deadline."""
    name, patched_cls, pristine_cls, make_config, make_inputs = case
    torch.manual_seed(0)
    models = {}
    for label, cls, flags in [("unpatched", pristine_cls, {})] + [(v, patched_cls, VARIANTS[v]) for v in variants]:
        config = make_config(**flags)
        config._attn_implementation = attn
        models[label] = cls(config).train().to(args.torch_device)
    for variant in variants:
        models[variant].load_state_dict(models["unpatched"].state_dict(), strict=False)
    optimizers = {k: torch.optim.AdamW(m.parameters(), lr=1e-5) for k, m in models.items()}
    inputs = to_device(make_inputs(), args.torch_device)
    clock = Clock(args.torch_device, args.clock)
    for label in models:  # warm-up: allocator, AdamW state
        train_step(models[label], optimizers[label], inputs, clock, args.dtype)
    ratios = {v: [] for v in variants}
    unpatched = []
    gc.disable()  # the autograd graph is freed by reference counting; a collection would land in one step at random
    try:
        while True:
            open_ = [v for v in variants if len(ratios[v]) < args.min_pairs
                     or (len(ratios[v]) < args.max_pairs and not settled(ratios[v], args.target))]
            if not open_ or (time.monotonic() > deadline and all(len(ratios[v]) >= args.min_pairs for v in variants)):
                break
            for variant in open_:
                first_unpatched = (len(ratios[variant]) + variants.index(variant)) % 2 == 0
                order = ("unpatched", variant) if first_unpatched else (variant, "unpatched")
                times = {label: train_step(models[label], optimizers[label], inputs, clock, args.dtype) for label in order}
                ratios[variant].append(times[variant] / times["unpatched"])
                unpatched.append(times["unpatched"])
            gc.collect()
    finally:
        gc.enable()
    rows = []
    for variant in variants:
        mean, low, high = interval(ratios[variant])
        print(f"{name}, {attn}, {variant}: {mean:.3f} ({low:.3f}-{high:.3f}) from {len(ratios[variant])} pairs",
              file=sys.stderr)
        rows.append({
            "case": name, "attn": attn, "variant": variant, "pairs": len(ratios[variant]), "ratio": mean,
            "low": low, "high": high, "median": statistics.median(ratios[variant]),
            "unpatched_s": statistics.median(unpatched), "settled": settled(ratios[variant], args.target),
        })
    return rows


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny configs and a fixed 4 pairs per variant: seconds")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1: steadiest on a shared machine)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="cpu",
                        help="cpu: the process's CPU time (default; time taken by other processes on a shared machine "
                             "is not counted), wall: elapsed time")
    add_device_arguments(parser)
    parser.add_argument("--target", type=float, default=0.01,
                        help="stop adding pairs once the 95%% interval is within ±target (default 0.01)")
    parser.add_argument("--min-pairs", type=int, default=None, help="pairs per variant at least (default 5, quick 4)")
    parser.add_argument("--max-pairs", type=int, default=None, help="pairs per variant at most (default 60, quick 4)")
    parser.add_argument("--budget-min", type=float, default=14.0,
                        help="minutes for the whole run (default 14); past it a block stops at --min-pairs")
    parser.add_argument("--out", help="also write the markdown table to this file")
    args = parser.parse_args(argv)
    args.torch_device = resolve_device(args, "slimming_overhead.py")
    if args.min_pairs is None:
        args.min_pairs = 4 if args.quick else 5
    if args.max_pairs is None:
        args.max_pairs = args.min_pairs if args.quick else max(60, args.min_pairs)
    if args.threads < 1:
        parser.error(f"--threads: expected a positive number of threads, got {args.threads}")
    if not 0 < args.target < 1:
        parser.error(f"--target: expected a relative half-width in (0, 1), got {args.target}")
    if args.min_pairs < 3:
        parser.error(f"--min-pairs: expected at least 3 pairs (an interval needs a spread), got {args.min_pairs}")
    if args.max_pairs < args.min_pairs:
        parser.error(f"--max-pairs: expected at least --min-pairs ({args.min_pairs}), got {args.max_pairs}")
    if args.budget_min <= 0:
        parser.error(f"--budget-min: expected a positive number of minutes, got {args.budget_min}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    start, load_start = time.monotonic(), os.getloadavg()[0]
    blocks = [(case, attn, variants) for case in cases(args.quick) for attn, variants in BLOCKS]
    weights = [len(variants) for _, _, variants in blocks]
    rows = []
    for i, (case, attn, variants) in enumerate(blocks):  # each block gets its share of the time still left
        left = args.budget_min * 60 - (time.monotonic() - start)
        deadline = time.monotonic() + left * weights[i] / sum(weights[i:])
        rows += measure(case, attn, variants, args, deadline)
    elapsed = time.monotonic() - start
    clock_name = Clock(args.torch_device, args.clock).name
    lines = [
        f"Slimming overhead: train step (fwd+bwd+AdamW), patched / unpatched step in adjacent pairs (order alternating), "
        f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
        f"{device_label(args.torch_device)}, {args.dtype}, {clock_name}, "
        f"{elapsed / 60:.1f} min, load average {load_start:.1f} at the start and {os.getloadavg()[0]:.1f} at the end",
        "",
        "| config | attention | slimming | pairs | ratio (geometric mean) | 95% interval | median ratio | "
        f"unpatched step ({clock_name}, s, median) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        mark = "" if r["settled"] else " (wider than the target)"
        lines.append(
            f"| {r['case']} | {r['attn']} | {r['variant']} | {r['pairs']} | {r['ratio']:.3f} | "
            f"{r['low']:.3f}–{r['high']:.3f}{mark} | {r['median']:.3f} | {r['unpatched_s']:.4f} |"
        )
    lines += [
        "",
        f"- Interval: 95% t-interval on the mean of the per-pair log-ratios, exponentiated; pairs are added until it is "
        f"within ±{args.target:.0%} (at least {args.min_pairs}, at most {args.max_pairs} pairs per variant) or the "
        f"{args.budget_min:g}-minute budget is spent.",
    ]
    unpatched = {(r["case"], r["attn"]): r["unpatched_s"] for r in rows}
    for case, *_ in cases(args.quick):
        lines.append(
            f"- {case}: the unpatched eager step is {unpatched[case, 'eager'] / unpatched[case, 'sdpa']:.2f}× the "
            f"unpatched sdpa step (medians of separate blocks, not paired): what slimming would cost if it forced "
            f"eager attention."
        )
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "w") as handle:
            handle.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
