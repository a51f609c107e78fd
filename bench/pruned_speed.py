"""How fast a pruned ticket really is: measured speed-up of ViT-Base / BERT-base with 30% and 80% of heads and FFN
neurons pruned, against the FLOPs ratio from the shapes (what a perfect implementation would reach).

Tickets are made the library's way: a seeded random coefficient draw, `earlybird.masks.compute_mask` (layerwise:
every layer keeps the same count), `earlybird.plans.make_plan`, `earlybird.slimming.apply_plan` (the patch's
`prune_heads` / `prune_intermediate`) and `fold_slimming`. Every variant starts from the same dense weights. Inference
(`inference_mode`, eval) and training steps (forward + backward + AdamW) are timed alternately, the order rotating each
round, after one warm-up call each (inference at a model's second batch size or length reuses the warmed models); the
figure is the ratio of medians, of wall time and of CPU time. Two controls say where speed is left:
uneven per-layer counts (global scope) and an FFN width rounded up to a multiple of 64, and forward hooks split each
inference into attention blocks, FFN blocks and the unpruned rest.

FLOPs counted (2 x multiply-accumulates): the encoder's q/k/v/o projections, attention scores and context products
and both FFN linears (`earlybird.slimming.encoder_flops_per_token`), plus the unpruned matmuls: ViT patch embedding,
BERT pooler, the classifier. Element-wise work (layer norms, GELU, softmax, residual adds, dropout, embedding lookups)
is not counted. The same ratio bounds the training step (its FLOPs are ~3x the forward's for every part).

On a GPU (`--device cuda`) the models and inputs are on the device and every figure read as "CPU" below is CUDA-event
time (`benchlib.Clock`), the block split included; `--dtype bf16` runs the passes under bf16 autocast.

    .venv/bin/python bench/pruned_speed.py [--quick] [--repeats N] [--threads T] [--train-all]
        [--device cpu|cuda] [--dtype fp32|bf16] [--out results.md]
"""

from __future__ import annotations

import copy
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import BertConfig, ViTConfig  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402
from transformers.models.bert.modeling_bert import BertForSequenceClassification  # noqa: E402
from transformers.models.vit.modeling_vit import ViTForImageClassification  # noqa: E402

from earlybird.masks import n_pruned  # noqa: E402
from earlybird.plans import make_plan  # noqa: E402
from earlybird.records import Records  # noqa: E402
from earlybird.slimming import apply_plan, encoder_flops_per_token, encoder_layers, fold_slimming  # noqa: E402

from benchlib import Clock, autocast, device_label, emit, make_parser, resolve_device, set_threads, to_device  # noqa: E402

SLIM = dict(self_slimming=True, inter_slimming=True)
NUM_LABELS = {"vit": 10, "bert": 2}


# --------------------------------------------------------------------------- models and variants


def model_specs(quick: bool) -> dict:
    """{kind: (label, class, config)}; slimming on so tickets are made exactly as the training code makes them."""
    if quick:
        vit = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, image_size=32,
                   patch_size=8)
        bert = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256, vocab_size=1000,
                    max_position_embeddings=128)
    else:
        vit, bert = dict(image_size=224), dict()  # ViT-Base/16 and BERT-base defaults
    return {
        "vit": ("ViT-tiny" if quick else "ViT-Base/16", ViTForImageClassification,
                ViTConfig(num_labels=NUM_LABELS["vit"], **vit, **SLIM)),
        "bert": ("BERT-tiny" if quick else "BERT-base", BertForSequenceClassification,
                 BertConfig(num_labels=NUM_LABELS["bert"], **bert, **SLIM)),
    }


def cases(quick: bool, train_all: bool) -> list[dict]:
    """Timed configurations: model kind, batch, sequence (image) size, whether a training step is timed, controls."""
    if quick:
        return [
            dict(kind="vit", batch=4, train=True, controls=True),
            dict(kind="vit", batch=8, train=train_all, controls=False),
            dict(kind="bert", batch=4, seq=32, train=True, controls=True),
            dict(kind="bert", batch=4, seq=64, train=train_all, controls=False),
        ]
    return [
        dict(kind="vit", batch=8, train=True, controls=True),
        dict(kind="vit", batch=32, train=train_all, controls=False),
        dict(kind="bert", batch=8, seq=128, train=True, controls=True),
        dict(kind="bert", batch=8, seq=384, train=train_all, controls=False),
    ]


def aligned_ratio(ratio: float, n: int, multiple: int) -> float:
    """A ratio whose kept count is `n - round(ratio n)` rounded up to a multiple of `multiple`."""
    kept = n - n_pruned(ratio, n)
    kept = min(n, -(-kept // multiple) * multiple)
    return (n - kept) / n


def variants(config, quick: bool) -> list[dict]:
    """(label, head ratio, neuron ratio, scope, is_control). Ratios follow earlybird.masks (round(r n) per layer)."""
    multiple = 16 if quick else 64
    return [
        dict(label="dense", heads=0.0, inter=0.0, scope="layerwise", control=False),
        dict(label="30% pruned", heads=0.3, inter=0.3, scope="layerwise", control=False),
        dict(label="80% pruned", heads=0.8, inter=0.8, scope="layerwise", control=False),
        dict(label="80%, global (uneven per layer)", heads=0.8, inter=0.8, scope="global", control=True),
        dict(label=f"80%, FFN width to x{multiple}", heads=0.8,
             inter=aligned_ratio(0.8, config.intermediate_size, multiple), scope="layerwise", control=True),
    ]


def random_plan(config, variant: dict, seed: int) -> dict:
    """A seeded random ticket through the library's own mask and plan functions.

    Global scope gets per-layer scaled importances (as real coefficients differ by depth), so counts differ by layer.
    """
    rng = np.random.default_rng(seed)
    layers = config.num_hidden_layers
    scale = rng.permutation(np.linspace(0.85, 1.15, layers))[:, None] if variant["scope"] == "global" else 1.0
    msa = (rng.random((layers, config.num_attention_heads)) * scale)[None].astype(np.float32)
    mlp = (rng.random((layers, config.intermediate_size)) * scale)[None].astype(np.float32)
    records = Records.from_arrays(msa=msa, mlp=mlp, steps=np.array([0]))
    return make_plan(records, 0, variant["heads"], variant["inter"], variant["scope"], variant["scope"])


def build_variants(spec, quick: bool, seed: int = 0, device="cpu") -> dict:
    """{label: (variant, model)}: the dense weights, pruned by each plan, coefficients folded (plain models), on the
    device."""
    _, cls, config = spec
    torch.manual_seed(seed)
    base = cls(config)
    out = {}
    for index, variant in enumerate(variants(config, quick)):
        model = copy.deepcopy(base)
        if variant["heads"] or variant["inter"]:
            apply_plan(model, random_plan(config, variant, seed=1000 + index))
        fold_slimming(model)
        out[variant["label"]] = (variant, model.to(device))
    return out


def kept_counts(model) -> tuple[list[int], list[int]]:
    layers = encoder_layers(model)
    heads = [(l.attention if hasattr(l.attention, "num_attention_heads") else l.attention.self).num_attention_heads
             for l in layers]
    inter = [(l.mlp if hasattr(l, "mlp") else l.intermediate).intermediate_size for l in layers]
    return heads, inter


def model_flops(model, kind: str, tokens: int) -> int:
    """Forward FLOPs per example: encoder from the shapes + the unpruned matmuls (see the module docstring)."""
    config = model.config
    hidden = config.hidden_size
    flops = encoder_flops_per_token(model, tokens) * tokens
    if kind == "vit":
        patches = tokens - 1
        flops += 2 * config.num_channels * config.patch_size**2 * hidden * patches
    else:
        flops += 2 * hidden * hidden  # pooler, on [CLS]
    flops += 2 * hidden * NUM_LABELS[kind]  # classifier
    return flops


# --------------------------------------------------------------------------- timing


def make_inputs(case: dict, config, seed: int = 0, device="cpu") -> tuple[dict, int]:
    generator = torch.Generator().manual_seed(seed)
    batch = case["batch"]
    if case["kind"] == "vit":
        size = config.image_size
        tokens = (size // config.patch_size) ** 2 + 1
        inputs = {"pixel_values": torch.randn(batch, 3, size, size, generator=generator)}
    else:
        tokens = case["seq"]
        inputs = {"input_ids": torch.randint(0, config.vocab_size, (batch, tokens), generator=generator)}
    inputs["labels"] = torch.randint(0, NUM_LABELS[case["kind"]], (batch,), generator=generator)
    return to_device(inputs, device), tokens


class BlockTimer:
    """Forward hooks around each layer's attention block and FFN block(s): the clock's time (CPU time; CUDA events
    on a GPU, read after the forward) of each kind per forward."""

    def __init__(self, model, clock: Clock):
        self.clock = clock
        self.spans = {"attention": [], "ffn": []}
        self._start = {}
        self.handles = []
        for layer in encoder_layers(model):
            blocks = [("attention", layer.attention)]
            blocks += [("ffn", layer.mlp)] if hasattr(layer, "mlp") else [("ffn", layer.intermediate), ("ffn", layer.output)]
            for kind, module in blocks:
                self.handles.append(module.register_forward_pre_hook(self._pre(module)))
                self.handles.append(module.register_forward_hook(self._post(module, kind)))

    def _pre(self, module):
        def hook(*_):
            self._start[id(module)] = self.clock.mark()
        return hook

    def _post(self, module, kind):
        def hook(*_):
            self.spans[kind].append((self._start.pop(id(module)), self.clock.mark()))
        return hook

    def take(self) -> dict:
        out = {kind: sum(self.clock.elapsed(*pair) for pair in pairs) for kind, pairs in self.spans.items()}
        self.spans = {"attention": [], "ffn": []}
        return out

    def remove(self):
        for handle in self.handles:
            handle.remove()


def infer(model, inputs, timer: BlockTimer, dtype: str = "fp32") -> dict:
    """One forward: wall seconds, the clock's seconds ("cpu": CPU time of this process, or CUDA-event time), and the
    clock's seconds in each kind of block."""
    timer.take()
    with timer.clock.span() as span, torch.inference_mode(), autocast(timer.clock.device, dtype):
        model(**{k: v for k, v in inputs.items() if k != "labels"})
    return {"wall": span.wall, "cpu": span.seconds, **timer.take()}


def train_step(model, optimizer, inputs, clock: Clock, dtype: str = "fp32") -> dict:
    """Forward + backward + AdamW: wall and the clock's seconds, and the clock's seconds of the optimizer part."""
    with clock.span() as span:
        with autocast(clock.device, dtype):
            loss = model(**inputs).loss
        loss.backward()
        middle = clock.mark()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        end = clock.mark()
    return {"wall": span.wall, "cpu": span.seconds, "optimizer": clock.elapsed(middle, end)}


def medians(samples: list[dict]) -> dict:
    out = {key: statistics.median(s[key] for s in samples) for key in samples[0]}
    if "attention" in samples[0]:  # the unhooked rest, per call, then its median
        out["rest"] = statistics.median(s["cpu"] - s["attention"] - s["ffn"] for s in samples)
    return out


def alternate(labels: list, run_one, repeats: int, warm_up: bool = True) -> dict:
    """One warm-up call each, then `repeats` rounds, the order rotating every round: {label: [results]}."""
    for label in labels if warm_up else ():
        run_one(label)
    out = {label: [] for label in labels}
    for rep in range(repeats):
        shift = rep % len(labels)
        order = labels[shift:] + labels[:shift]
        if rep % 2:
            order = order[::-1]
        for label in order:
            out[label].append(run_one(label))
    return out


def measure_case(case: dict, spec, models: dict, repeats: int, warm: bool, clock: Clock, dtype: str) -> list[dict]:
    """Inference (and training) rows of one configuration. `warm`: the models already ran inference (at another
    batch or length), so the inference pass skips its warm-up calls (the training pass always has its own)."""
    name, _, config = spec
    inputs, tokens = make_inputs(case, config, device=clock.device)
    labels = [label for label, (variant, _) in models.items() if case["controls"] or not variant["control"]]
    flops = {label: model_flops(models[label][1], case["kind"], tokens) * case["batch"] for label in labels}
    where = f"{case['batch']}, {config.image_size}²" if case["kind"] == "vit" else f"{case['batch']} x seq {case['seq']}"
    title = f"{name}, batch {where}"
    rows = []

    for label in labels:
        models[label][1].eval()
    timers = {label: BlockTimer(models[label][1], clock) for label in labels}
    results = alternate(labels, lambda label: infer(models[label][1], inputs, timers[label], dtype), repeats, not warm)
    for timer in timers.values():
        timer.remove()
    dense = medians(results["dense"])
    for label in labels:
        m = medians(results[label])
        rows.append(dict(config=title, kind=case["kind"], pass_="inference", variant=label, flops=flops[label],
                         median=m["wall"], cpu=m["cpu"], throughput=case["batch"] / m["wall"],
                         speedup=dense["wall"] / m["wall"], speedup_cpu=dense["cpu"] / m["cpu"],
                         limit=flops["dense"] / flops[label], blocks=m, control=models[label][0]["control"],
                         model=models[label][1], tokens=tokens, batch=case["batch"]))

    if case["train"]:
        train_labels = [label for label in labels if not models[label][0]["control"]]
        optimizers = {}
        for label in train_labels:
            models[label][1].train()
            optimizers[label] = torch.optim.AdamW(models[label][1].parameters(), lr=1e-5)
        results = alternate(train_labels, lambda label: train_step(models[label][1], optimizers[label], inputs, clock,
                                                                   dtype), repeats)
        dense = medians(results["dense"])
        for label in train_labels:
            m = medians(results[label])
            rows.append(dict(config=title, kind=case["kind"], pass_="train step", variant=label, flops=3 * flops[label],
                             median=m["wall"], cpu=m["cpu"], throughput=case["batch"] / m["wall"],
                             speedup=dense["wall"] / m["wall"], speedup_cpu=dense["cpu"] / m["cpu"],
                             limit=flops["dense"] / flops[label], control=False, optimizer=m["optimizer"],
                             params=sum(p.numel() for p in models[label][1].parameters())))
        del optimizers
        for label in train_labels:  # AdamW state released; gradients off
            models[label][1].zero_grad(set_to_none=True)
            models[label][1].eval()
    return rows


def size_rows(name: str, models: dict) -> list[dict]:
    rows = []
    for label, (variant, model) in models.items():
        heads, inter = kept_counts(model)
        params = sum(p.numel() for p in model.parameters())
        with tempfile.TemporaryDirectory(prefix="eb-bench-") as tmp:
            model.save_pretrained(tmp)
            size = sum(f.stat().st_size for f in Path(tmp).rglob("*") if f.is_file())
        rows.append(dict(model=name, variant=label, heads=heads, inter=inter, params=params, bytes=size))
    return rows


# --------------------------------------------------------------------------- report


def counts(values: list[int]) -> str:
    return str(values[0]) if len(set(values)) == 1 else "/".join(map(str, values))


def render(speed: list[dict], sizes: list[dict], repeats: int, threads: int, clock: Clock, dtype: str = "fp32") -> str:
    device = device_label(clock.device) + (", bf16 autocast" if dtype == "bf16" else "")
    gpu = (" On CUDA, every figure called CPU time below is CUDA-event time (the GPU's time), wall time is taken "
           "between synchronisations.") if clock.cuda else ""
    lines = [
        f"Pruned-model speed: median of {repeats} alternating calls after one warm-up each, torch {torch.__version__}, "
        f"{threads} thread(s), {device}.{gpu} Speed-up = dense median / pruned median, of wall time and of this process's CPU "
        "time (with one thread, CPU time is the work done, much less disturbed by other jobs on a shared machine). "
        "FLOPs limit = dense FLOPs / pruned FLOPs (encoder matmuls + patch embedding / pooler / classifier, from the "
        "shapes); 'of limit' = speed-up / limit, wall and CPU (goal at 80%: >= 0.8).",
        "",
        "| config | pass | variant | GFLOP / batch | wall (s) | items/s | speed-up wall | speed-up CPU | FLOPs limit | of limit (wall / CPU) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in speed:
        lines.append(f"| {r['config']} | {r['pass_']} | {r['variant']} | {r['flops'] / 1e9:.4g} | {r['median']:.4g} | "
                     f"{r['throughput']:.4g} | {r['speedup']:.2f}x | {r['speedup_cpu']:.2f}x | {r['limit']:.2f}x | "
                     f"{r['speedup'] / r['limit']:.2f} / {r['speedup_cpu'] / r['limit']:.2f} |")
    lines += [
        "",
        "Where the time goes (inference, forward hooks, CPU time): median CPU seconds in all attention blocks, all FFN "
        "blocks, and the rest (embeddings, classifier; for ViT also the layer norms and residual adds outside the "
        "blocks). Block speed-up vs its own FLOPs limit (attention: dense heads / kept heads, projections and scores; "
        "FFN: dense width / kept width).",
        "",
        "| config | variant | attention (s) | speed-up / limit | FFN (s) | speed-up / limit | rest (s) | rest share |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    inference = [r for r in speed if r["pass_"] == "inference"]
    dense_rows = {r["config"]: r for r in inference if r["variant"] == "dense"}
    for r in inference:
        d = dense_rows[r["config"]]
        heads, inter = kept_counts(r["model"])
        dense_heads, dense_inter = kept_counts(d["model"])
        att_limit = sum(dense_heads) / sum(heads)
        ffn_limit = sum(dense_inter) / sum(inter)
        rest = r["blocks"]["rest"]
        att_speed = d["blocks"]["attention"] / r["blocks"]["attention"]
        ffn_speed = d["blocks"]["ffn"] / r["blocks"]["ffn"]
        lines.append(
            f"| {r['config']} | {r['variant']} | {r['blocks']['attention']:.4g} | {att_speed:.2f}x / {att_limit:.2f}x | "
            f"{r['blocks']['ffn']:.4g} | {ffn_speed:.2f}x / {ffn_limit:.2f}x | {rest:.3g} | {rest / r['cpu']:.0%} |"
        )
    lines += [
        "",
        "Training step split (CPU time): forward + backward vs the AdamW step, whose cost follows the parameter count, "
        "unpruned embeddings included (not in the FLOPs).",
        "",
        "| config | variant | parameters (M) | fwd + bwd (s) | speed-up | AdamW + zero_grad (s) | speed-up | optimizer share |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    train = [r for r in speed if r["pass_"] == "train step"]
    dense_train = {r["config"]: r for r in train if r["variant"] == "dense"}
    for r in train:
        d = dense_train[r["config"]]
        fb, dfb = r["cpu"] - r["optimizer"], d["cpu"] - d["optimizer"]
        lines.append(f"| {r['config']} | {r['variant']} | {r['params'] / 1e6:.2f} | {fb:.4g} | {dfb / fb:.2f}x | "
                     f"{r['optimizer']:.4g} | {d['optimizer'] / r['optimizer']:.2f}x | {r['optimizer'] / r['cpu']:.0%} |")
    lines += [
        "",
        "Size: parameters and `save_pretrained` checkpoint (safetensors + config), kept heads / FFN neurons per layer.",
        "",
        "| model | variant | kept heads / layer | kept FFN / layer | parameters (M) | checkpoint (MB) | vs dense |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    dense_size = {r["model"]: r["bytes"] for r in sizes if r["variant"] == "dense"}
    for r in sizes:
        lines.append(f"| {r['model']} | {r['variant']} | {counts(r['heads'])} | {counts(r['inter'])} | "
                     f"{r['params'] / 1e6:.2f} | {r['bytes'] / 1e6:.1f} | {r['bytes'] / dense_size[r['model']]:.2f} |")
    lines += ["", *findings(speed)]
    return "\n".join(lines)


def findings(speed: list[dict]) -> list[str]:
    out = []
    goal = [r for r in speed if r["variant"] == "80% pruned"]
    for key, what in (("speedup", "wall"), ("speedup_cpu", "CPU time")):
        met = [r for r in goal if r[key] >= 0.8 * r["limit"]]
        detail = ", ".join(f"{r['config']} {r['pass_']}: {r[key] / r['limit']:.2f}" for r in goal)
        out.append(f"- Goal (speed-up >= 0.8 x FLOPs limit at 80%), {what}: met in {len(met)} of {len(goal)} "
                   f"measurements ({detail}).")
    by = {(r["config"], r["pass_"], r["variant"]): r for r in speed}
    for (config, pass_, variant), r in by.items():
        if not r["control"]:
            continue
        base = by.get((config, pass_, "80% pruned"))
        if base is None:
            continue
        # Compare CPU time per FLOP: the controls do not have exactly the uniform ticket's FLOPs.
        rel = (r["cpu"] / r["flops"]) / (base["cpu"] / base["flops"])
        out.append(f"- {config} {pass_}, {variant}: {rel:.2f}x the CPU time per FLOP of the uniform 80% ticket "
                   f"({'slower' if rel > 1 else 'faster'} by {abs(rel - 1):.0%}).")
    return out


def main(argv=None) -> int:
    parser = make_parser(__doc__, "tiny configs, a pass of seconds", device=True)
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per variant (default 3, quick 2)")
    parser.add_argument("--train-all", action="store_true",
                        help="also time training steps at ViT batch 32 / BERT seq 384 (slow on a small CPU)")
    args = parser.parse_args(argv)
    device = resolve_device(args, "pruned_speed.py")
    clock = Clock(device)
    set_threads(args)
    hf_logging.disable_progress_bar()
    repeats = args.repeats or (2 if args.quick else 3)
    specs = model_specs(args.quick)
    speed, sizes = [], []
    for kind, spec in specs.items():
        models = build_variants(spec, args.quick, device=device)
        warm = False
        for case in cases(args.quick, args.train_all):
            if case["kind"] == kind:
                speed += measure_case(case, spec, models, repeats, warm, clock, args.dtype)
                warm = True
                print(f"[pruned_speed] {speed[-1]['config']} done", file=sys.stderr, flush=True)
        sizes += size_rows(spec[0], models)
    return emit(render(speed, sizes, repeats, torch.get_num_threads(), clock, args.dtype), args)


if __name__ == "__main__":
    sys.exit(main())
