"""Decoder LLMs pruned: parameters, prefill and decode tokens/s of a Llama-shaped model with 50% of its heads and FFN
neurons pruned (uniform, keeping the GQA rule) vs dense, in PyTorch and as a standard export in plain transformers;
and what slimming costs a training step.

The model is random (hidden 1024, 8 layers, 16 query / 4 key-value heads, FFN 2816, vocabulary 32000: a size two
CPU cores run; `--quick`: a tiny one). The ticket is made the library's way: seeded random coefficients,
`earlybird.plans.plan_from_coefficients` (uniform scope, GQA rule `per-group`: every KV group keeps 2 of its 4 query
heads, every layer 1408 neurons), `earlybird.slimming.apply_plan`; every variant starts from the same dense weights.

* PyTorch (the patched transformers, in this process): dense and pruned are timed alternately, the order rotating
  each round, after a warm-up call each, in CPU time of the process (one thread: waiting for a core on a shared
  machine is not counted); the figure is the ratio of medians. Prefill: one forward pass over a
  `--prompt`-token prompt (batch 1, no cache kept). Decode: greedy `generate` with the KV cache; its tokens/s are
  `(new - 1) / (time(new tokens) - time(1 token))`, so the prompt's prefill is not counted.
* Plain transformers (a subprocess importing the pristine 5.23.0 files `setup.sh` kept, no earlybird code): the dense
  model and the pruned ticket after `earlybird export --format hf` (a standard Llama config, no remote code) timed
  the same way in that process; the exported ticket must generate the same tokens as the patched pruned model.
* Slimming overhead of a training step (forward + backward + AdamW at batch `--train-batch` x `--train-seq`): the
  patched model with both slimmings on vs the unpatched model, in adjacent pairs with alternating order, geometric
  mean with a 95% interval: `bench/slimming_overhead.py`'s method (its `measure`), on this Llama.

    .venv/bin/python bench/llm_pruned_speed.py [--quick] [--threads T] [--repeats N] [--overhead-min M] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

import benchlib  # noqa: E402

# earlybird is imported inside the functions that use it: the plain-transformers subprocess imports this module for
# time_models and must not load any of it.

ROOT = Path(__file__).resolve().parents[1]
FULL = dict(hidden_size=1024, num_hidden_layers=8, num_attention_heads=16, num_key_value_heads=4,
            intermediate_size=2816, vocab_size=32000, max_position_embeddings=2048)
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=8, num_key_value_heads=2, intermediate_size=96,
            vocab_size=256, max_position_embeddings=256)
RATIO = 0.5


def make_config(quick: bool, **flags) -> LlamaConfig:
    return LlamaConfig(**(TINY if quick else FULL), tie_word_embeddings=False, bos_token_id=None, eos_token_id=None,
                       pad_token_id=None, **flags)


def make_models(quick: bool):
    """(dense, pruned, plan): the same random weights, the pruned one the library's uniform ticket at RATIO."""
    from earlybird.plans import plan_from_coefficients
    from earlybird.slimming import apply_plan, model_shape

    torch.manual_seed(0)
    dense = LlamaForCausalLM(make_config(quick)).eval()
    shape = model_shape(dense)
    rng = np.random.default_rng(0)
    coefficients = {"msa": rng.random((shape["layers"], shape["heads"])),
                    "mlp": rng.random((shape["layers"], shape["intermediate"]))}
    plan = plan_from_coefficients(coefficients, 0, {"msa": RATIO, "mlp": RATIO}, {"msa": "uniform", "mlp": "uniform"},
                                  meta={"model": shape})
    pruned = LlamaForCausalLM(make_config(quick)).eval()
    pruned.load_state_dict(dense.state_dict())
    apply_plan(pruned, plan)
    return dense, pruned, plan


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def prompt_ids(config, length: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, config.vocab_size, (1, length), generator=torch.Generator().manual_seed(seed))


# CPU time of the process: on a shared machine the time spent waiting for a core is not the model's (with one thread
# it is the duration on a quiet machine), as bench/slimming_overhead.py times its steps.
CLOCK = time.process_time


@torch.inference_mode()
def prefill_seconds(model, ids) -> float:
    start = CLOCK()
    model(input_ids=ids, use_cache=False)
    return CLOCK() - start


@torch.inference_mode()
def generate(model, ids, new: int):
    start = CLOCK()
    out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                         do_sample=False, pad_token_id=0)
    return CLOCK() - start, out[0, ids.shape[1]:].tolist()


def time_models(models: dict, prompt, decode_prompt, new: int, repeats: int) -> dict:
    """{name: {prefill_tps, decode_tps, tokens}}: each measurement taken for every model in turn, the order rotating."""
    names = list(models)
    for name in names:  # warm-up
        prefill_seconds(models[name], prompt)
        generate(models[name], decode_prompt, 2)
    times = {name: {"prefill": [], "one": [], "many": []} for name in names}
    tokens = {}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            times[name]["prefill"].append(prefill_seconds(models[name], prompt))
            times[name]["one"].append(generate(models[name], decode_prompt, 1)[0])
            seconds, tokens[name] = generate(models[name], decode_prompt, new)
            times[name]["many"].append(seconds)
    return {name: {"prefill_tps": prompt.shape[1] / statistics.median(t["prefill"]),
                   "decode_tps": (new - 1) / max(1e-9, statistics.median(t["many"]) - statistics.median(t["one"])),
                   "tokens": tokens[name]}
            for name, t in times.items()}


# --------------------------------------------------------------------------- plain transformers (subprocess)

_PLAIN = r"""
import json, sys
sys.path.insert(0, sys.argv[1])  # the bench folder, for time_models
spec = json.loads(sys.argv[2])
import torch
torch.set_num_threads(spec["threads"])
import transformers
from transformers import AutoModelForCausalLM
import llm_pruned_speed as bench
assert not any(m.startswith("earlybird") for m in sys.modules), "earlybird imported in plain transformers"
models = {name: AutoModelForCausalLM.from_pretrained(path).eval() for name, path in spec["models"].items()}
prompt, decode_prompt = torch.tensor(spec["prompt"]), torch.tensor(spec["decode_prompt"])
out = bench.time_models(models, prompt, decode_prompt, spec["new"], spec["repeats"])
for name, model in models.items():
    out[name]["parameters"] = sum(p.numel() for p in model.parameters())
    out[name]["patched"] = hasattr(model.model.layers[0].mlp, "prune_intermediate")
out["transformers_file"] = transformers.__file__
print("RESULT " + json.dumps(out))
"""


def unpatched_site(workdir: Path) -> Path:
    """A folder to put first on PYTHONPATH: the installed transformers with the patched files back to the pristine
    copies `setup.sh` kept (symlinks to everything else), as tests/test_export.py's fixture builds it."""
    from earlybird import transformers_patch

    package = transformers_patch.installed_transformers_dir()
    pristine = package / transformers_patch.BACKUP
    targets = {p.relative_to(pristine) for p in pristine.rglob("*.py")}
    real_dirs = {parent for target in targets for parent in target.parents}
    root = workdir / "unpatched-site" / "transformers"

    def build(rel: Path):
        (root / rel).mkdir(parents=True)
        for entry in (package / rel).iterdir():
            if entry.name.startswith(".earlybird") or entry.name == "__pycache__":
                continue
            if rel / entry.name in targets:
                (root / rel / entry.name).write_bytes((pristine / rel / entry.name).read_bytes())
            elif rel / entry.name in real_dirs:
                build(rel / entry.name)
            else:
                (root / rel / entry.name).symlink_to(entry)

    build(Path())
    return root.parent


def time_plain(models: dict, prompt, decode_prompt, new: int, repeats: int, threads: int, workdir: Path) -> dict:
    spec = {"models": {k: str(v) for k, v in models.items()}, "prompt": prompt.tolist(),
            "decode_prompt": decode_prompt.tolist(), "new": new, "repeats": repeats, "threads": threads}
    site = unpatched_site(workdir)
    proc = subprocess.run([sys.executable, "-c", _PLAIN, str(Path(__file__).parent), json.dumps(spec)],
                          capture_output=True, text=True, cwd=workdir, env={**os.environ, "PYTHONPATH": str(site)})
    line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"plain transformers subprocess failed:\n{proc.stderr[-3000:]}")
    out = json.loads(line[len("RESULT "):])
    if not out.pop("transformers_file").startswith(str(site)) or any(r["patched"] for r in out.values()):
        raise SystemExit("the plain transformers subprocess imported the patched transformers")
    return out


def export_ticket(pruned, workdir: Path) -> Path:
    """The pruned model saved and exported with `earlybird export --format hf` (a standard config: uniform ticket)."""
    ticket, out = workdir / "ticket", workdir / "export"
    pruned.save_pretrained(ticket)
    proc = subprocess.run([sys.executable, "-m", "earlybird.cli", "export", str(ticket), "--format", "hf", "-o",
                           str(out)], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f"earlybird export failed: {proc.stderr.strip()[-2000:]}")
    return out


# --------------------------------------------------------------------------- slimming overhead of a training step


def overhead_rows(args, deadline: float) -> list[dict]:
    from slimming_overhead import measure

    from earlybird.transformers_patch import import_pristine_modeling

    batch, seq = args.train_batch, args.train_seq
    vocab = make_config(args.quick).vocab_size
    case = (f"Llama ({'tiny' if args.quick else '1024 x 8 layers, 16/4 heads'}, seq {seq}, batch {batch})",
            LlamaForCausalLM, import_pristine_modeling("llama").LlamaForCausalLM,
            lambda **flags: make_config(args.quick, **flags),
            lambda: {"input_ids": (ids := torch.randint(0, vocab, (batch, seq))), "labels": ids})
    settings = argparse.Namespace(min_pairs=args.min_pairs, max_pairs=args.max_pairs, target=args.target,
                                  clock="cpu", torch_device=torch.device("cpu"), dtype="fp32")
    return measure(case, "sdpa", ("both",), settings, deadline)


def parse_args(argv):
    parser = benchlib.make_parser(__doc__, "a tiny Llama, 2 repeats, 3 overhead pairs: seconds")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per model (default 5, quick 2)")
    parser.add_argument("--prompt", type=int, default=None, help="prefill prompt length (default 256, quick 16)")
    parser.add_argument("--new", type=int, default=None, help="decoded tokens (default 64, quick 4)")
    parser.add_argument("--train-batch", type=int, default=None, help="training step batch (default 1, quick 2)")
    parser.add_argument("--train-seq", type=int, default=None, help="training step length (default 128, quick 16)")
    parser.add_argument("--target", type=float, default=0.01, help="overhead: stop at a ±target interval (0.01)")
    parser.add_argument("--min-pairs", type=int, default=None, help="overhead pairs at least (default 5, quick 3)")
    parser.add_argument("--max-pairs", type=int, default=None, help="overhead pairs at most (default 40, quick 3)")
    parser.add_argument("--overhead-min", type=float, default=5.0, help="minutes for the overhead pairs (default 5)")
    args = parser.parse_args(argv)
    for name, full, quick in (("repeats", 5, 2), ("prompt", 256, 16), ("new", 64, 4), ("train_batch", 1, 2),
                              ("train_seq", 128, 16), ("min_pairs", 5, 3), ("max_pairs", 40, 3)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.new < 2 or args.repeats < 1 or args.prompt < 1 or args.min_pairs < 3 or args.max_pairs < args.min_pairs:
        parser.error("expected --new >= 2, --repeats >= 1, --prompt >= 1, 3 <= --min-pairs <= --max-pairs")
    return args


def main(argv=None) -> int:
    from earlybird.masks import head_group_size
    from earlybird.slimming import kept_sizes, model_shape
    from earlybird.transformers_patch import import_pristine_modeling

    args = parse_args(argv)
    benchlib.set_threads(args)
    threads = torch.get_num_threads()
    start = time.monotonic()
    dense, pruned, plan = make_models(args.quick)
    config = dense.config
    prompt, decode_prompt = prompt_ids(config, args.prompt), prompt_ids(config, 8, seed=2)
    with tempfile.TemporaryDirectory() as tmp:
        dense_dir = Path(tmp) / "dense"
        dense.save_pretrained(dense_dir)
        export_dir = export_ticket(pruned, Path(tmp))
        exported_config = json.loads((export_dir / "config.json").read_text())
        # the export under the unpatched modeling code, in this process: timed alternately with the patched models
        stock = import_pristine_modeling("llama").LlamaForCausalLM.from_pretrained(export_dir).eval()
        torch_rows = time_models({"dense": dense, "pruned": pruned, "export": stock}, prompt, decode_prompt, args.new,
                                 args.repeats)
        plain = time_plain({"dense": dense_dir, "pruned": export_dir}, prompt, decode_prompt, args.new, args.repeats,
                           threads, Path(tmp))
    same_tokens = plain["pruned"]["tokens"] == torch_rows["pruned"]["tokens"]
    overhead = overhead_rows(args, time.monotonic() + 60 * args.overhead_min)
    kept = kept_sizes(pruned)
    group = head_group_size(model_shape(dense))
    shape = (f"hidden {config.hidden_size}, {config.num_hidden_layers} layers, {config.num_attention_heads} query / "
             f"{config.num_key_value_heads} KV heads, FFN {config.intermediate_size}, vocabulary {config.vocab_size}")
    lines = [
        f"Decoder LLM pruned ({'tiny, --quick' if args.quick else 'Llama-shaped, random weights'}: {shape}); "
        f"torch {torch.__version__}, {threads} thread(s), "
        f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU'}, "
        f"{(time.monotonic() - start) / 60:.1f} min, load average {os.getloadavg()[0]:.1f} at the end",
        "",
        f"Ticket: {RATIO:.0%} of heads and FFN neurons, uniform scope, GQA rule per-group: "
        f"{kept['heads'][0]} query heads ({kept['heads'][0] // (config.num_key_value_heads)} per KV group of {group}) "
        f"and {kept['intermediate'][0]} neurons in every layer; exported config: num_attention_heads "
        f"{exported_config.get('num_attention_heads')}, num_key_value_heads {exported_config.get('num_key_value_heads')}, "
        f"intermediate_size {exported_config.get('intermediate_size')}, auto_map "
        f"{'absent' if 'auto_map' not in exported_config else 'present'}.",
        "",
        f"| runtime | model | parameters (M) | prefill tokens/s ({args.prompt}-token prompt) | speed-up | "
        f"decode tokens/s ({args.new} new) | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    runs = [("PyTorch, this process", torch_rows, {"dense": parameters(dense), "pruned": parameters(pruned),
                                                   "export": parameters(stock)}, ("dense", "pruned", "export")),
            ("plain transformers 5.23.0, subprocess", plain, {k: v["parameters"] for k, v in plain.items()},
             ("dense", "pruned"))]
    labels = {"dense": "dense (patched code)", "pruned": "pruned (patched code)",
              "export": "pruned, standard export (unpatched modeling file)"}
    for runtime, rows, params, names in runs:
        for name in names:
            r, d = rows[name], rows["dense"]
            label = ({"dense": "dense", "pruned": "pruned, standard export"} if rows is plain else labels)[name]
            lines.append(f"| {runtime} | {label} | {params[name] / 1e6:.1f} | {r['prefill_tps']:.0f} | "
                         f"{r['prefill_tps'] / d['prefill_tps']:.2f} | {r['decode_tps']:.1f} | "
                         f"{r['decode_tps'] / d['decode_tps']:.2f} |")
    lines += [
        "",
        f"- The exported ticket in plain transformers (the pristine 5.23.0 files) generates the same {args.new} "
        f"greedy tokens as the patched pruned model: {'yes' if same_tokens else 'NO'}.",
        f"- Speed-ups are ratios of medians of {args.repeats} rounds, models alternating within a runtime; the two "
        "runtimes ran one after the other (separate processes), so compare their rows within a runtime: the patched "
        "and the unpatched code on the same pruned shapes are compared in the first (rows 2 and 3).",
        "",
        "| slimming overhead | pairs | ratio (geometric mean) | 95% interval | unpatched step (cpu s, median) |",
        "|---|---|---|---|---|",
    ]
    for r in overhead:
        mark = "" if r["settled"] else " (wider than the target)"
        lines.append(f"| {r['case']}, both slimmings, sdpa | {r['pairs']} | {r['ratio']:.3f} | "
                     f"{r['low']:.3f}–{r['high']:.3f}{mark} | {r['unpatched_s']:.3f} |")
    lines.append(f"- Overhead: patched step with self- and inter-slimming / unpatched step, adjacent pairs, order "
                 f"alternating, CPU time, until the interval is within ±{args.target:.0%} or {args.overhead_min:g} "
                 f"min ({args.min_pairs}-{args.max_pairs} pairs): bench/slimming_overhead.py's method.")
    return benchlib.emit("\n".join(lines), args)


if __name__ == "__main__":
    sys.exit(main())
