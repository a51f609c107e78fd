"""What a deployed ticket weighs and how fast it answers: an exported 80% ticket against the dense model, on disk and
in inference latency, in PyTorch (the `hf` export, loaded with `trust_remote_code=True`) and in onnxruntime (the `onnx`
export).

ViT-Base/16 at 224² and BERT-base at sequence length 128, random weights (`--quick`: tiny ones). The ticket is made
the library's way (`pruned_speed.random_plan`: a seeded random coefficient draw, `earlybird.masks` layerwise 80% of
heads and FFN neurons, `make_plan`, `apply_plan`, `fold_slimming`); the dense model is the same weights unpruned. Both
go through `earlybird export` twice (hf, onnx), which checks each export against the patched model. Timed: one
inference call at batch 1 and batch 8, the four variants (PyTorch dense / ticket, onnxruntime dense / ticket)
alternating, the order rotating each round, after one warm-up call each, one thread for torch and for onnxruntime;
the figures are ratios of medians (wall time and this process's CPU time), not the seconds, on a shared machine.

    .venv/bin/python bench/export_speed.py [--quick] [--repeats N] [--threads T] [--workdir DIR] [--out FILE]
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import onnxruntime  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

from earlybird.export import export, quiet_libraries, sample_inputs, task_auto_class  # noqa: E402
from earlybird.slimming import apply_plan, fold_slimming  # noqa: E402

from benchlib import Clock, emit, make_parser, set_threads  # noqa: E402
from pruned_speed import alternate, model_specs, random_plan  # noqa: E402

RATIO = 0.8
RUNTIMES = ("PyTorch", "onnxruntime")
VARIANTS = ("dense", "80% ticket")


def build_models(spec, seed: int = 0) -> dict:
    """{variant: model}: the dense weights, and the same weights with 80% of heads and neurons pruned (layerwise)."""
    _, cls, config = spec
    torch.manual_seed(seed)
    dense = cls(config).eval()
    ticket = copy.deepcopy(dense)
    apply_plan(ticket, random_plan(config, dict(heads=RATIO, inter=RATIO, scope="layerwise"), seed=seed + 1))
    return {"dense": fold_slimming(dense), "80% ticket": fold_slimming(ticket)}


def file_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in ([path] if path.is_file() else path.rglob("*")) if f.is_file()) / 1e6


def export_both(models: dict, workdir: Path) -> dict:
    """{variant: {"hf": dir, "onnx": dir, "seconds": {...}, "mb": {...}}} after `earlybird export` of each model."""
    out = {}
    for variant, model in models.items():
        name = variant.replace("% ", "-").replace(" ", "-")
        source = workdir / name
        model.save_pretrained(source)
        entry = {"seconds": {}, "mb": {"checkpoint": file_mb(source / "model.safetensors")}}
        for fmt in ("hf", "onnx"):
            start = time.perf_counter()
            entry[fmt], _ = export(source, workdir / f"{name}-{fmt}", fmt, log=lambda line: None)
            entry["seconds"][fmt] = time.perf_counter() - start
        entry["mb"]["hf"] = file_mb(entry["hf"])
        entry["mb"]["onnx"] = file_mb(entry["onnx"] / "model.onnx")
        out[variant] = entry
    return out


def load_runners(exports: dict, threads: int) -> dict:
    """{(runtime, variant): run(inputs)}: the hf export through its auto class, the ONNX graph in onnxruntime."""
    runners = {}
    for variant, entry in exports.items():
        auto = getattr(transformers, task_auto_class(json.loads((entry["hf"] / "config.json").read_text())))
        model = auto.from_pretrained(entry["hf"], trust_remote_code=True).eval()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        session = onnxruntime.InferenceSession(str(entry["onnx"] / "model.onnx"), options,
                                               providers=["CPUExecutionProvider"])

        def run_torch(inputs, model=model):
            with torch.inference_mode():
                model(**inputs)

        def run_onnx(inputs, session=session):
            session.run(None, {k: v.numpy() for k, v in inputs.items()})

        runners[("PyTorch", variant)] = run_torch
        runners[("onnxruntime", variant)] = run_onnx
    return runners


CPU = Clock("cpu")  # a CPU deployment benchmark (onnxruntime's CPU provider): CPU time and wall time


def timed(run, inputs) -> dict:
    span = CPU.time(run, inputs)
    return {"wall": span.wall, "cpu": span.seconds}


def measure(title: str, config, runners: dict, batches: list[int], seq_len: int, repeats: int) -> list[dict]:
    rows = []
    labels = list(runners)
    for batch in batches:
        inputs = sample_inputs(config, batch=batch, seq_len=seq_len)
        if "attention_mask" in inputs:
            inputs["attention_mask"] = torch.ones_like(inputs["attention_mask"])  # full sentences
        results = alternate(labels, lambda label: timed(runners[label], inputs), repeats)
        med = {label: {k: statistics.median(r[k] for r in results[label]) for k in ("wall", "cpu")} for label in labels}
        for runtime, variant in labels:
            m, dense = med[(runtime, variant)], med[(runtime, "dense")]
            torch_same = med[("PyTorch", variant)]
            rows.append(dict(config=title, batch=batch, runtime=runtime, variant=variant, wall=m["wall"], cpu=m["cpu"],
                             speedup=dense["wall"] / m["wall"], speedup_cpu=dense["cpu"] / m["cpu"],
                             vs_torch=torch_same["wall"] / m["wall"], vs_torch_cpu=torch_same["cpu"] / m["cpu"]))
        print(f"[export_speed] {title}, batch {batch} done", file=sys.stderr, flush=True)
    return rows


def render(speed: list[dict], sizes: list[dict], repeats: int, threads: int) -> str:
    lines = [
        f"Exported 80% ticket vs dense: latency of one inference call, median of {repeats} alternating calls after one "
        f"warm-up each, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {threads} thread(s), CPU. "
        "Speed-up = dense median / ticket median in the same runtime; 'vs PyTorch' = PyTorch median / this median for "
        "the same model. Wall time and this process's CPU time (one thread: the work done, less disturbed by other "
        "jobs on a shared machine).",
        "",
        "| config | batch | runtime | model | latency (ms) | CPU (ms) | speed-up vs dense (wall / CPU) | vs PyTorch (wall / CPU) |",
        "|---|---:|---|---|---:|---:|---:|---:|",
    ]
    for r in speed:
        lines.append(f"| {r['config']} | {r['batch']} | {r['runtime']} | {r['variant']} | {r['wall'] * 1e3:.4g} | "
                     f"{r['cpu'] * 1e3:.4g} | {r['speedup']:.2f}x / {r['speedup_cpu']:.2f}x | "
                     f"{r['vs_torch']:.2f}x / {r['vs_torch_cpu']:.2f}x |")
    lines += [
        "",
        "Size on disk (MB): the patched model's `save_pretrained` weights, the `hf` export folder (weights, config, "
        "generated code) and the ONNX graph (weights inside); seconds `earlybird export` took (load, fold, export, "
        "check).",
        "",
        "| config | model | checkpoint (MB) | hf export (MB) | ONNX (MB) | vs dense (hf / ONNX) | export seconds (hf / onnx) |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    dense = {r["config"]: r for r in sizes if r["variant"] == "dense"}
    for r in sizes:
        d = dense[r["config"]]
        lines.append(f"| {r['config']} | {r['variant']} | {r['checkpoint']:.1f} | {r['hf']:.1f} | {r['onnx']:.1f} | "
                     f"{r['hf'] / d['hf']:.2f} / {r['onnx'] / d['onnx']:.2f} | "
                     f"{r['seconds']['hf']:.1f} / {r['seconds']['onnx']:.1f} |")
    lines += ["", *findings(speed, sizes)]
    return "\n".join(lines)


def findings(speed: list[dict], sizes: list[dict]) -> list[str]:
    out = []
    for r in sizes:
        if r["variant"] != "dense":
            d = next(s for s in sizes if s["config"] == r["config"] and s["variant"] == "dense")
            out.append(f"- {r['config']}: the exported 80% ticket takes {r['hf']:.1f} MB as an hf folder "
                       f"(dense {d['hf']:.1f} MB, {d['hf'] / r['hf']:.1f}x smaller) and {r['onnx']:.1f} MB as ONNX "
                       f"(dense {d['onnx']:.1f} MB, {d['onnx'] / r['onnx']:.1f}x smaller).")
    for r in speed:
        if r["variant"] != "dense":
            out.append(f"- {r['config']}, batch {r['batch']}, {r['runtime']}: ticket / dense speed-up {r['speedup']:.2f}x "
                       f"wall, {r['speedup_cpu']:.2f}x CPU time.")
    return out


def main(argv=None) -> int:
    parser = make_parser(__doc__, "tiny configs, a pass of seconds")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per variant (default 7, quick 2)")
    parser.add_argument("--workdir", help="where the tickets and exports are written (default: a temporary directory)")
    args = parser.parse_args(argv)
    set_threads(args)
    threads = torch.get_num_threads()  # onnxruntime gets as many
    hf_logging.disable_progress_bar()
    repeats = args.repeats or (2 if args.quick else 7)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="eb-export-speed-"))
    speed, sizes = [], []
    try:
        for kind, spec in model_specs(args.quick).items():
            title = f"{spec[0]}, {spec[2].image_size}²" if kind == "vit" else f"{spec[0]}, seq {32 if args.quick else 128}"
            with quiet_libraries():
                exports = export_both(build_models(spec), workdir / kind)
            for variant, entry in exports.items():
                sizes.append(dict(config=title, variant=variant, seconds=entry["seconds"], **entry["mb"]))
            runners = load_runners(exports, threads)
            speed += measure(title, spec[2], runners, [1, 8] if not args.quick else [1, 4],
                             32 if args.quick else 128, repeats)
            del runners
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return emit(render(speed, sizes, repeats, threads), args)


if __name__ == "__main__":
    sys.exit(main())
