"""What EarlyBirdCallback costs per step: a transformers Trainer step with the callback vs without, alternated.

The model has BERT-base-sized coefficients (12 layers x 12 heads + 12 x 3072 neurons) on a narrow encoder (hidden 96,
sequence 16, batch 4), so that a step is short and the callback's own work -- the L1 subgradient, the no-decay group
swap, reading the coefficients, the records' device buffer and flushes, the detector's buffer and its checks -- is as
visible as it can be: the ratios are upper bounds. Each round trains every variant for the same steps with a fresh
Trainer, the variants' order alternating from round to round, after one untimed round (imports: statsmodels loads at
the first check); a step is the time between two `on_step_begin` events (the first of each round is left out),
averaged over the round; the ratio to the Trainer alone is taken within each round (the variants ran side by side),
and its median over rounds reported. The time inside the callback's events is measured too. Each round ends
with the records' flush of all its rows (one flush per round instead of one per 256 steps: an upper bound on the
flushes' share); the detectors never draw (patience too large: the draw's plan is a one-off). The per-step cost is
then put against a measured train step of BERT-base proper (hidden 768, batch 8 x 128).

`--device cuda`: the Trainer runs on the GPU (`use_cpu=False`; `--dtype bf16`: `bf16=True`), each `on_step_begin`
synchronises before reading the clock (`benchlib.Clock`), and the BERT-base step is CUDA-event time.

    .venv/bin/python bench/callback_overhead.py [--quick] [--rounds N] [--steps N] [--threads N]
        [--device cpu|cuda] [--dtype fp32|bf16] [--out results.md]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback  # noqa: E402
from transformers import TrainingArguments  # noqa: E402

from benchlib import Clock, bert_train_step_seconds, device_label, emit, make_parser, resolve_device, set_threads  # noqa: E402
from earlybird.hf import EarlyBirdCallback  # noqa: E402

NEVER = 10**9  # patience: the detectors check but never draw


def variants(quick: bool) -> dict:
    """{label: the callback's keyword arguments beyond L1 and records (None: no callback)}."""
    slope = dict(smooth=3, window=10, every=2) if quick else dict(smooth=20, window=30, every=10)
    return {
        "Trainer alone": None,
        "+ EarlyBirdCallback: L1 + records": {},
        f"+ detection: slope ({', '.join(f'{k} {v}' for k, v in slope.items())})": dict(method="slope", **slope),
        "+ detection: hamming (5 masks, every step)": dict(method="hamming", cached=5, every=1),
    }


class Tokens(torch.utils.data.Dataset):
    def __init__(self, n, length, vocab):
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, vocab, (n, length), generator=generator)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i, 0] % 2}


EVENTS = ("on_pre_optimizer_step", "on_optimizer_step", "on_step_end", "on_log", "on_save", "on_train_end")


def _timed(event: str):
    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        try:
            return getattr(EarlyBirdCallback, event)(self, *args, **kwargs)
        finally:
            self.spent[event] = self.spent.get(event, 0.0) + time.perf_counter() - start
    return timed


# The callback with a stopwatch on every event it runs during training (on_train_begin, a one-off, is left out).
TimedCallback = type("TimedCallback", (EarlyBirdCallback,), {e: _timed(e) for e in EVENTS})


class StepClock(TrainerCallback):
    """The time from one on_step_begin to the next: the whole step, every callback included (on CUDA the queued
    kernels are waited for first)."""

    def __init__(self, clock: Clock):
        self.clock = clock
        self.starts = []

    def on_step_begin(self, args, state, control, **kwargs):
        self.clock.synchronize()
        self.starts.append(time.perf_counter())

    def on_train_end(self, args, state, control, **kwargs):
        self.clock.synchronize()
        self.starts.append(time.perf_counter())

    def step_times(self) -> list[float]:
        return [b - a for a, b in zip(self.starts[1:], self.starts[2:])]  # the first step warms up


def config(quick: bool, wide: bool = False) -> BertConfig:
    if quick:
        sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)
    else:
        sizes = dict(hidden_size=768 if wide else 96, num_hidden_layers=12, num_attention_heads=12,
                     intermediate_size=3072)
    return BertConfig(vocab_size=1000, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                      self_slimming=True, inter_slimming=True, **sizes)


def run_round(models: dict, data, steps: int, scratch: str, order: list, options: dict, device="cpu",
              dtype: str = "fp32") -> tuple[dict, dict]:
    """{variant: its step times} and {variant: (seconds inside the callback per step in its step events, in its
    final flush)}."""
    times, inside = {}, {}
    for label in order:
        clock = StepClock(Clock(device))
        callbacks = [clock]
        if options[label] is not None:
            detector = {**options[label], "patience": NEVER} if options[label] else {}
            callbacks.insert(0, TimedCallback(l1_self=1e-4, l1_inter=1e-4, **detector))
            callbacks[0].spent = {}
        args = TrainingArguments(tempfile.mkdtemp(dir=scratch), max_steps=steps, per_device_train_batch_size=4,
                                 learning_rate=1e-4, weight_decay=0.01, logging_steps=20, save_strategy="no",
                                 report_to="none", disable_tqdm=True, use_cpu=device.type == "cpu",
                                 bf16=dtype == "bf16")
        Trainer(model=models[label], args=args, train_dataset=data, callbacks=callbacks).train()
        times[label] = clock.step_times()
        if len(callbacks) > 1:
            spent = callbacks[0].spent
            end = spent.pop("on_train_end", 0.0)
            inside[label] = (sum(spent.values()) / steps, end / steps)
    return times, inside


def bert_base_step(repeats: int, device="cpu", dtype: str = "fp32") -> float:
    """Median seconds of one train step (forward, backward, AdamW) of BERT-base at batch 8 x 128."""
    return bert_train_step_seconds(BertForSequenceClassification(config(False, wide=True)).train(), repeats, device,
                                   dtype)


def main(argv=None) -> int:
    parser = make_parser(__doc__, "a tiny model (2 layers, 4 heads, 128 neurons), 2 rounds of 12 steps: seconds",
                         device=True)
    parser.add_argument("--rounds", type=int, help="alternating rounds (default 6; quick 2)")
    parser.add_argument("--steps", type=int, help="steps per variant and round (default 40; quick 12)")
    args = parser.parse_args(argv)
    device = resolve_device(args, "callback_overhead.py")
    set_threads(args)
    rounds = args.rounds or (2 if args.quick else 6)
    steps = args.steps or (12 if args.quick else 40)
    options = variants(args.quick)
    torch.manual_seed(0)
    models = {label: BertForSequenceClassification(config(args.quick)) for label in options}
    data = Tokens(4 * steps, 16, 1000)
    means = {label: [] for label in options}  # per round
    spent = {label: [] for label in options}
    with tempfile.TemporaryDirectory(prefix="eb-callback-") as scratch:
        for r in range(rounds + 1):
            order = list(options) if r % 2 == 0 else list(options)[::-1]
            times, inside = run_round(models, data, steps, scratch, order, options, device, args.dtype)
            if r == 0:
                continue  # warm-up
            for label in options:
                means[label].append(statistics.fmean(times[label]))
                if label in inside:
                    spent[label].append(inside[label])
    # Each round's variants ran side by side: the ratio is taken within a round, then the median over rounds.
    ratio = {label: statistics.median(m / b for m, b in zip(means[label], means["Trainer alone"])) for label in options}
    mean = {label: statistics.median(values) for label, values in means.items()}
    base = mean["Trainer alone"]
    shape = "2 layers x 4 heads + 2 x 128 neurons, hidden 32" if args.quick else \
        "BERT-base-sized coefficients: 12 x 12 heads + 12 x 3072 neurons, hidden 96"
    lines = [
        f"EarlyBirdCallback overhead: Trainer step ({shape}; batch 4 x 16): mean step of a round ({steps - 1} "
        f"steps), median over {rounds} alternating rounds; ratio within each round, median; torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{device_label(device)}{', bf16' if args.dtype == 'bf16' else ''}",
        "",
        "| variant | step (ms) | ratio to the Trainer alone | step difference (ms) | inside the callback: step events "
        "(ms/step) | + the round's final flush (ms/step) |",
        "|---|---|---|---|---|---|",
    ]
    for label, value in mean.items():
        if options[label] is None:
            lines.append(f"| {label} | {value * 1e3:.1f} | 1.000 | - | - | - |")
            continue
        events, flush = (statistics.median(part) for part in zip(*spent[label]))
        lines.append(f"| {label} | {value * 1e3:.1f} | {ratio[label]:.3f} | {(value - base) * 1e3:+.2f} | "
                     f"{events * 1e3:.2f} | {flush * 1e3:.2f} |")
    lines.append("")
    lines.append(f"- Inside the callback: its events' own time, median over rounds: a steadier figure than the "
                 f"difference of two noisy step means. The final flush writes the round's {steps} rows in one go "
                 "(with the default chunk of 256 rows a long run flushes once per 256 steps).")
    worst = max(sum(statistics.median(part) for part in zip(*spent[label])) for label in spent if spent[label])
    if args.quick:
        lines.append("- BERT-base step not measured in --quick.")
    else:
        full = bert_base_step(3, device, args.dtype)
        lines.append(f"- A BERT-base train step (hidden 768, batch 8 x 128, AdamW) takes {full:.2f} s here: the "
                     f"largest time inside the callback above (step events + flush), {worst * 1e3:.2f} ms per step, is "
                     f"{100 * worst / full:.3f}% of it.")
    return emit("\n".join(lines), args)


if __name__ == "__main__":
    sys.exit(main())
