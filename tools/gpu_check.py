#!/usr/bin/env python
"""GPU validation: one command that checks, on one GPU with no internet and no downloaded weights, what the CPU test
suite cannot -- the patch's numerics under the GPU's kernels, the fp16 GradScaler with the L1 term, an EB-Train run
with a crash and --resume through the bash script, and throughput -- and writes one JSON and one markdown table.

    .venv/bin/python tools/gpu_check.py                                # CUDA, ViT-Base / BERT-base, <= 8 min on an H200
    .venv/bin/python tools/gpu_check.py --device cpu --tiny            # the same checks on tiny models (the test suite)
    .venv/bin/python tools/gpu_check.py --out DIR --budget-s 480 --only probe,equality

Checks (each isolated: a failure is recorded and the next check runs; results are rewritten atomically after each):
  probe        versions (torch, CUDA, cuDNN, NCCL, transformers, accelerate, the driver's CUDA version), GPU, sdpa
               backends, flash-attn, patch state
  equality     patched (slimming on, coefficients 1) vs the unpatched 5.23.0 model (the pristine copy kept by the
               patch tool, as tests/test_patch_models.py), random-init ViT-Base and BERT-base, eager and sdpa: fp32
               with TF32 off, bf16 autocast (error against fp32 no worse than the unpatched model's), zeroed
               coefficients = pruning
  soft_by_one  softmax off by one under every sdpa backend (sdpa_kernel) and flash-attention-2 when installed,
               against a float64 eager reference; its error is put against the plain softmax's under the same kernel
  fp16_loop    fp16 GradScaler + L1 through earlybird/training/loop.py (L1 in the loss): the coefficient step with L1
               minus the step without is exactly -lr * l1 * sign(c) (SGD), not divided by the loss scale; a NaN batch
               skips its step and the scheduler does not advance on it (as transformers' Trainer)
  fp16_trainer the same through a transformers Trainer (fp16=True) with EarlyBirdCallback (L1 on the gradients)
  ebtrain      EB-Train through Finetuning/scripts/slim_vit.bash on a synthetic JPEG imagefolder with a random-init
               ViT (a local model directory made here), bf16: uninterrupted vs crashed (--debug-crash-at-step) and
               resumed (--resume): same draw step, same records
  throughput   images/s: bare model step, patched step (slimming on), our loop (run_vit.py on the JPEGs), the data
               loader alone

Exit status: 0 when no check failed (pass or skip), 1 when one failed, 2 on bad input (e.g. --device cuda without CUDA).
On the CPU the fp16 checks use a CPU GradScaler (accelerate makes none there), as tests/test_hf_callback.py does.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(ROOT / "bench"))

from benchlib import Clock, autocast, resolve_device, to_device  # noqa: E402

DEFAULT_OUT = ROOT / "bench" / "results" / "gpu_check"
FP32_ATOL = 1e-5        # patched (coefficients 1) vs unpatched, fp32 with TF32 off
PRUNE_ATOL = 5e-5       # zeroed coefficients vs pruned: other GEMM shapes, another reduction order (1e-5 on tiny models)
BF16_FACTOR = 1.25      # patched bf16 error vs fp32 <= this x the unpatched model's
SOFT_FACTOR = 2.0       # soft_by_one's error vs float64 <= this x the plain softmax's under the same kernel + floor
SOFT_FLOOR = {"fp32": 1e-5, "bf16": 2e-3}
GRAD_RTOL = 1e-3        # the L1 part of a coefficient step vs lr * l1


class Skip(Exception):
    """A check that cannot run here: recorded as skip with its reason."""


# --------------------------------------------------------------------------- the run: checks, results, budget


class Run:
    def __init__(self, args, device):
        import torch

        self.args, self.device, self.tiny = args, device, args.tiny
        self.cuda = device.type == "cuda"
        self.out = Path(args.out)
        self.work = Path(tempfile.mkdtemp(prefix="eb-gpu-check-", dir=args.workdir))
        self.start = time.monotonic()
        self.results: list[dict] = []
        self.shared: dict = {}  # what one check makes and another reuses (the JPEG folder, the model directory)
        self.torch = torch

    def left(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.start)

    def write(self) -> None:
        from earlybird.fileio import write_json_atomic, write_text_atomic

        self.out.mkdir(parents=True, exist_ok=True)
        failed = [r["name"] for r in self.results if r["status"] == "fail"]
        doc = {"device": str(self.device), "tiny": self.tiny, "budget_s": self.args.budget_s,
               "elapsed_s": round(time.monotonic() - self.start, 1), "failed": failed,
               "finished": len(self.results) == len(self.selected), "checks": self.results}
        write_json_atomic(doc, self.out / "gpu_check.json")
        write_text_atomic(render(doc), self.out / "gpu_check.md")

    def run_all(self, checks) -> int:
        self.selected = checks
        for name, (function, estimate, title) in checks.items():
            entry = {"name": name, "title": title, "status": None, "seconds": 0.0, "numbers": {}, "reason": ""}
            needed = estimate[0 if self.tiny else 1]
            tic = time.monotonic()
            if self.left() < needed:
                entry.update(status="skip", reason=f"budget: {self.left():.0f} s left of --budget-s "
                                                    f"{self.args.budget_s:g}, this check needs about {needed} s")
            else:
                print(f"[gpu_check] {name}: {title}", file=sys.stderr, flush=True)
                try:
                    numbers = function(self)
                    entry["numbers"] = numbers
                    failures = numbers.pop("failures", [])
                    entry["status"] = "fail" if failures else "pass"
                    entry["reason"] = "; ".join(failures)
                except Skip as why:
                    entry.update(status="skip", reason=str(why))
                except Exception as err:  # noqa: BLE001 -- each check is isolated: record it and go on
                    entry.update(status="fail", reason=f"{type(err).__name__}: {' '.join(str(err).split())[:500]}",
                                 traceback=traceback.format_exc()[-4000:])
                finally:
                    reset_accelerate()
                    if self.cuda:
                        self.torch.cuda.empty_cache()
            entry["seconds"] = round(time.monotonic() - tic, 1)
            print(f"[gpu_check] {name}: {entry['status']} ({entry['seconds']} s) {entry['reason']}", file=sys.stderr,
                  flush=True)
            self.results.append(entry)
            self.write()
        return 1 if any(r["status"] == "fail" for r in self.results) else 0


def reset_accelerate() -> None:
    """A check's Accelerator (a Trainer's with fp16, say) must not be the next check's: accelerate keeps one state
    per process and refuses another mixed precision."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def render(doc: dict) -> str:
    lines = [f"# GPU check: {doc['device']}{' (--tiny)' if doc['tiny'] else ''}", "",
             f"{doc['elapsed_s']} s of a {doc['budget_s']:g} s budget; "
             f"{'finished' if doc['finished'] else 'partial (still running or stopped)'}; "
             f"failed: {', '.join(doc['failed']) or 'none'}.", "",
             "| check | status | seconds | numbers | reason |", "|---|---|---:|---|---|"]
    for r in doc["checks"]:
        numbers = "; ".join(f"{k}: {fmt(v)}" for k, v in r["numbers"].items() if not isinstance(v, (dict, list)))
        lines.append(f"| {r['name']} | {r['status']} | {r['seconds']} | {numbers or '-'} | {fmt(r['reason']) or '-'} |")
    for r in doc["checks"]:
        tables = {k: v for k, v in r["numbers"].items() if isinstance(v, list) and v and isinstance(v[0], dict)}
        for key, rows in tables.items():
            columns = list(dict.fromkeys(c for row in rows for c in row))
            lines += ["", f"## {r['name']}: {key}", "", "| " + " | ".join(columns) + " |",
                      "|" + "---|" * len(columns)]
            lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {fmt(v)}" for k, v in value.items())
    return str(value).replace("|", "\\|")  # a table cell


CHECKS: dict = {}


def check(name: str, seconds_tiny: int, seconds_full: int, title: str):
    """Register a check: its estimated seconds (--tiny on a CPU, full size on an H200) feed the budget guard."""
    def register(function):
        CHECKS[name] = (function, (seconds_tiny, seconds_full), title)
        return function
    return register


@contextlib.contextmanager
def exact_fp32(torch):
    """fp32 matmuls and convolutions in full precision (TF32 off), restored after."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.get_float32_matmul_precision())
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


@contextlib.contextmanager
def quiet():
    """The entry points' and libraries' own output, kept for an error message."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield sink


# --------------------------------------------------------------------------- models


def vit_config(tiny: bool, **flags):
    from transformers import ViTConfig

    sizes = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, image_size=32,
                 patch_size=8) if tiny else dict(image_size=224)
    return ViTConfig(num_labels=10, **sizes, **flags)


def bert_config(tiny: bool, **flags):
    from transformers import BertConfig

    sizes = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                 vocab_size=1000) if tiny else dict(vocab_size=30522)
    return BertConfig(num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **sizes, **flags)


def make_inputs(kind: str, tiny: bool, device, masked: bool = False, batch: int = 4) -> dict:
    import torch

    generator = torch.Generator().manual_seed(0)
    if kind == "vit":
        size = 32 if tiny else 224
        return to_device({"pixel_values": torch.randn(batch, 3, size, size, generator=generator)}, device)
    seq = 32 if tiny else 128
    inputs = {"input_ids": torch.randint(0, 1000, (batch, seq), generator=generator)}
    if masked:
        mask = torch.ones(batch, seq, dtype=torch.long)
        mask[1, -seq // 4:] = 0
        mask[2, -seq // 2:] = 0
        inputs["attention_mask"] = mask
    return to_device(inputs, device)


def classes(kind: str):
    from transformers.models.bert.modeling_bert import BertForSequenceClassification
    from transformers.models.vit.modeling_vit import ViTForImageClassification

    from earlybird.transformers_patch import import_pristine_modeling

    name = "ViTForImageClassification" if kind == "vit" else "BertForSequenceClassification"
    patched = ViTForImageClassification if kind == "vit" else BertForSequenceClassification
    return patched, getattr(import_pristine_modeling(kind), name)


def outputs(model, inputs, dtype: str = "fp32"):
    """The logits and the last hidden states, in fp32 (O(1) after LayerNorm: an absolute tolerance means something)."""
    import torch

    with torch.no_grad(), autocast(inputs[next(iter(inputs))].device, dtype):
        out = model(**inputs, output_hidden_states=True)
    return torch.cat([out.logits.float().flatten(), out.hidden_states[-1].float().flatten()])


def coefficient_modules(model):
    from earlybird.slimming import head_coefficients, neuron_coefficients

    return head_coefficients(model), neuron_coefficients(model)


def randomize_coefficients(model, seed: int = 1) -> None:
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for coefs in coefficient_modules(model):
            for c in coefs:
                c.copy_((torch.rand(c.shape, generator=generator) * 1.5 + 0.1).to(c.device))


# --------------------------------------------------------------------------- probe


def sdpa_backends(torch, device) -> dict:
    """{backend: "yes" | why not}: a small attention call under each sdpa backend alone (bf16; fp32 where the bf16
    call fails), so what is reported is what runs here, not what is compiled in."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    found = {}
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH,
                    SDPBackend.CUDNN_ATTENTION):
        why = None
        for dtype in (torch.bfloat16, torch.float32):
            q = torch.randn(2, 4, 16, 64, device=device, dtype=dtype)
            try:
                with sdpa_kernel([backend]):
                    torch.nn.functional.scaled_dot_product_attention(q, q, q)
                why = None
                found[backend.name.lower()] = f"yes ({str(dtype).split('.')[-1]})"
                break
            except RuntimeError as err:
                why = " ".join(str(err).split())[:120]
        if why is not None:
            found[backend.name.lower()] = f"no: {why}"
    return found


def nccl_version(torch) -> str:
    try:
        version = torch.cuda.nccl.version()
    except Exception as err:  # noqa: BLE001 -- a build without NCCL: say so
        return f"none ({type(err).__name__})"
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


@check("probe", 5, 10, "versions, GPU, sdpa backends, flash-attn, patch state")
def probe(run: Run) -> dict:
    import importlib.metadata
    import importlib.util

    import accelerate
    import torch
    import transformers

    from earlybird import transformers_patch

    numbers = {"torch": torch.__version__, "cuda": torch.version.cuda or "none",
               "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else "none",
               "transformers": transformers.__version__, "accelerate": accelerate.__version__,
               "python": platform.python_version()}
    if run.cuda:
        props = torch.cuda.get_device_properties(run.device)
        driver = getattr(torch._C, "_cuda_getDriverVersion", lambda: None)()
        numbers.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1),
                       capability=f"{props.major}.{props.minor}",
                       driver_cuda=f"{driver // 1000}.{driver % 1000 // 10}" if driver else "unknown",
                       nccl=nccl_version(torch))
    else:
        numbers.update(gpu="none (CPU)", cpu=platform.processor() or platform.machine(), cores=os.cpu_count())
    numbers["sdpa"] = sdpa_backends(torch, run.device)
    spec = importlib.util.find_spec("flash_attn")
    numbers["flash_attn"] = importlib.metadata.version("flash_attn") if spec else "not installed"
    numbers["patch"] = transformers_patch.overall_state(transformers_patch.installed_transformers_dir())[0]
    run.shared["sdpa"] = numbers["sdpa"]
    failures = []
    if not any(str(v).startswith("yes") for v in numbers["sdpa"].values()):
        failures.append("no sdpa backend runs here")
    if numbers["patch"] != "patched":
        failures.append(f"transformers is {numbers['patch']}, not patched: run `bash setup.sh`")
    return {**numbers, "failures": failures}


# --------------------------------------------------------------------------- patched vs unpatched


@check("equality", 10, 60, "patched vs unpatched: fp32 (TF32 off), bf16 autocast, zeroed coefficients = pruning")
def equality(run: Run) -> dict:
    import torch

    rows, failures = [], []
    for kind in ("vit", "bert"):
        patched_cls, pristine_cls = classes(kind)
        make = vit_config if kind == "vit" else bert_config
        for attn in ("eager", "sdpa"):
            torch.manual_seed(0)
            config = make(run.tiny)
            config._attn_implementation = attn
            pristine = pristine_cls(config).eval()
            slim_config = make(run.tiny, self_slimming=True, inter_slimming=True)
            slim_config._attn_implementation = attn
            patched = patched_cls(slim_config).eval()
            missing, unexpected = patched.load_state_dict(pristine.state_dict(), strict=False)
            if unexpected or not all(k.endswith("slimming_coef") for k in missing):
                raise RuntimeError(f"{kind}: the patched model's weights differ from the unpatched one's: "
                                   f"unexpected {unexpected[:3]}, missing {missing[:3]}")
            pristine.to(run.device), patched.to(run.device)
            inputs = make_inputs(kind, run.tiny, run.device, masked=kind == "bert")
            with exact_fp32(torch):
                reference = outputs(pristine, inputs)
                fp32 = (outputs(patched, inputs) - reference).abs().max().item()
            bf16_patched = outputs(patched, inputs, "bf16") - reference
            bf16_pristine = outputs(pristine, inputs, "bf16") - reference
            rms = {name: diff.pow(2).mean().sqrt().item() for name, diff in
                   (("patched", bf16_patched), ("unpatched", bf16_pristine))}
            row = {"model": kind, "attention": attn, "fp32 max abs diff": fp32,
                   "bf16 rms error, patched": rms["patched"], "bf16 rms error, unpatched": rms["unpatched"],
                   "bf16 max error, patched": bf16_patched.abs().max().item(),
                   "bf16 max error, unpatched": bf16_pristine.abs().max().item()}
            if fp32 > FP32_ATOL:
                failures.append(f"{kind}/{attn}: fp32 patched vs unpatched {fp32:.2e} > {FP32_ATOL:g}")
            if rms["patched"] > BF16_FACTOR * rms["unpatched"] + 1e-6:
                failures.append(f"{kind}/{attn}: bf16 rms error {rms['patched']:.2e} > {BF16_FACTOR} x the unpatched "
                                f"model's {rms['unpatched']:.2e}")
            row["zeroed = pruned, max abs diff"] = zeroed_vs_pruned(patched, inputs, torch)
            tolerance = FP32_ATOL if run.tiny else PRUNE_ATOL
            if row["zeroed = pruned, max abs diff"] > tolerance:
                failures.append(f"{kind}/{attn}: zeroed coefficients vs pruned {row['zeroed = pruned, max abs diff']:.2e}"
                                f" > {tolerance:g}")
            rows.append(row)
            del pristine, patched
    return {"rows": rows, "fp32 tolerance": FP32_ATOL, "bf16 factor": BF16_FACTOR, "failures": failures}


def zeroed_vs_pruned(slim, inputs, torch) -> float:
    """Random coefficients, some heads and neurons zeroed, against the same model with them pruned (fp32, no TF32)."""
    slim = copy.deepcopy(slim)
    randomize_coefficients(slim)
    heads, neurons = coefficient_modules(slim)
    layers = len(heads)
    head_plan = {0: [1, 3], layers - 1: [0]}
    neuron_plan = {0: [0, 5, 36], 1 % layers: list(range(0, neurons[0].numel(), 2))}
    pruned = copy.deepcopy(slim)
    with torch.no_grad():
        for layer, hs in head_plan.items():
            heads[layer][hs] = 0.0
        for layer, ns in neuron_plan.items():
            neurons[layer][ns] = 0.0
    pruned.prune_heads(head_plan)
    pruned.prune_intermediate(neuron_plan)
    with exact_fp32(torch):
        return (outputs(pruned, inputs) - outputs(slim, inputs)).abs().max().item()


# --------------------------------------------------------------------------- soft_by_one under every kernel


@check("soft_by_one", 10, 45, "softmax off by one under every sdpa backend and flash-attention-2, vs float64")
def soft_by_one(run: Run) -> dict:
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    rows, failures, ran = [], [], 0
    backends = (SDPBackend.MATH, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION)
    for kind in ("vit", "bert"):
        patched_cls, _ = classes(kind)
        make = vit_config if kind == "vit" else bert_config
        models = {}
        for sbo in (True, False):
            torch.manual_seed(0)
            config = make(run.tiny, self_slimming=True, inter_slimming=True, soft_by_one=sbo)
            config._attn_implementation = "eager"
            model = patched_cls(config).eval()
            randomize_coefficients(model)
            models[sbo] = model
        models[False].load_state_dict(models[True].state_dict())
        for masked in ((False, True) if kind == "bert" else (False,)):
            inputs = make_inputs(kind, run.tiny, run.device, masked=masked)
            for sbo, model in models.items():
                reference = outputs(copy.deepcopy(model).double().to(run.device),
                                    {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()})
                model.to(run.device)
                model.config._attn_implementation = "sdpa"
                for backend in backends:
                    for dtype in ("fp32", "bf16"):
                        row = {"model": kind, "mask": masked, "kernel": f"sdpa/{backend.name.lower()}", "dtype": dtype,
                               "soft_by_one": sbo}
                        try:
                            with exact_fp32(torch), sdpa_kernel([backend]):
                                row["max abs error vs float64"] = (outputs(model, inputs, dtype) - reference).abs().max().item()
                        except RuntimeError as err:
                            row["not run"] = " ".join(str(err).split())[:90]
                        rows.append(row)
                model.config._attn_implementation = "eager"
                flash = flash_attention_2_row(model, inputs, reference, run, kind, masked, sbo)
                if flash is not None:
                    rows.append(flash)
    # each soft_by_one error against the plain softmax's under the same kernel, dtype and inputs
    plain = {(r["model"], r["mask"], r["kernel"], r["dtype"]): r.get("max abs error vs float64")
             for r in rows if not r["soft_by_one"]}
    for r in rows:
        if not r["soft_by_one"] or "max abs error vs float64" not in r:
            continue
        base = plain.get((r["model"], r["mask"], r["kernel"], r["dtype"]))
        limit = SOFT_FACTOR * (base if base is not None else 0.0) + SOFT_FLOOR[r["dtype"]]
        r["limit"] = limit
        ran += 1
        if r["max abs error vs float64"] > limit:
            failures.append(f"{r['model']} mask={r['mask']} {r['kernel']} {r['dtype']}: "
                            f"{r['max abs error vs float64']:.2e} > {limit:.2e}")
    if not ran:
        failures.append("no kernel ran soft_by_one")
    skipped = sorted({r["kernel"] + "/" + r["dtype"] for r in rows if "not run" in r})
    return {"combinations run": ran, "not available here": ", ".join(skipped) or "none", "rows": rows,
            "failures": failures}


def flash_attention_2_row(model, inputs, reference, run: Run, kind: str, masked: bool, sbo: bool) -> dict | None:
    import importlib.util

    import torch

    row = {"model": kind, "mask": masked, "kernel": "flash_attention_2", "dtype": "bf16", "soft_by_one": sbo}
    if not run.cuda:
        return None
    if importlib.util.find_spec("flash_attn") is None:
        return {**row, "not run": "flash_attn is not installed"}
    flash = copy.deepcopy(model).to(torch.bfloat16)
    flash.config._attn_implementation = "flash_attention_2"
    try:
        inputs = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in inputs.items()}
        row["max abs error vs float64"] = (outputs(flash, inputs) - reference).abs().max().item()
    except (RuntimeError, ValueError, ImportError) as err:
        row["not run"] = " ".join(str(err).split())[:90]
    return row


# --------------------------------------------------------------------------- fp16 GradScaler + L1


@contextlib.contextmanager
def cpu_grad_scaler(run: Run):
    """On the CPU accelerate makes no GradScaler: give every Accelerator one, as a GPU run with fp16 has (the scale,
    unscale, overflow and skip logic are the same; there is no fp16 autocast). On CUDA: nothing."""
    if run.cuda:
        yield
        return
    import accelerate
    import torch

    original = accelerate.Accelerator

    class WithScaler(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
            self.native_amp = True

    accelerate.Accelerator = WithScaler
    try:
        yield
    finally:
        accelerate.Accelerator = original


def first_step_sgd(params, lr: float, coefficients):
    """Plain SGD that keeps the coefficients just before and after its first step actually taken (a step the
    GradScaler skips for overflow never calls it)."""
    import torch

    class FirstStepSGD(torch.optim.SGD):
        def step(self, *args, **kwargs):
            if self.before is not None:
                return super().step(*args, **kwargs)
            self.before = [c.detach().float().cpu().clone() for c in coefficients]
            result = super().step(*args, **kwargs)
            self.after = [c.detach().float().cpu().clone() for c in coefficients]
            return result

        def delta(self):
            return torch.cat([(a - b).flatten() for a, b in zip(self.after, self.before)])

        def signs(self):
            return torch.cat([b.sign().flatten() for b in self.before])

    optimizer = FirstStepSGD(params, lr=lr)
    optimizer.before = optimizer.after = None
    return optimizer

    def delta(self):
        import torch

        return torch.cat([(a - b).flatten() for a, b in zip(self.after, self.before)])

    def signs(self):
        import torch

        return torch.cat([b.sign().flatten() for b in self.before])


def l1_step_verdict(deltas: dict, signs, lr: float, strength: float, scale_note: str) -> tuple[dict, list]:
    """With SGD, (step with L1) - (step without) must be -lr * l1 * sign(c) exactly (to fp32 rounding)."""
    expected = -lr * strength * signs
    difference = deltas[strength] - deltas[0.0]
    error = (difference - expected).abs().max().item()
    numbers = {"lr * l1": lr * strength, "L1 part of the step (mean)": difference.mean().item(),
               "max abs(L1 part + lr l1 sign c)": error, "if divided by the loss scale": scale_note}
    failures = []
    if error > GRAD_RTOL * lr * strength:
        failures.append(f"the L1 part of the coefficient step is off by {error:.2e} (> {GRAD_RTOL:g} x lr*l1 = "
                        f"{GRAD_RTOL * lr * strength:.2e}): mean {difference.mean().item():.3e}, expected "
                        f"{-lr * strength:.3e}")
    return numbers, failures


@check("fp16_loop", 20, 40, "fp16 GradScaler + L1 through earlybird/training/loop.py; a NaN batch")
def fp16_loop(run: Run) -> dict:
    from earlybird.slimming import head_coefficients, neuron_coefficients
    from earlybird.training import loop
    from earlybird.training.entrypoints import load_entry_point

    entry = load_entry_point(ROOT / "ViT_pretraining/main.py", "gpu_check_pretrain_main")
    lr, strength, steps, nan_step = 0.05, 0.1, 6, 4
    base = ["--disable-tqdm", "--self-slimming", "--inter-slimming", "--max-steps", str(steps),
            "--per-device-train-batch-size", "16", "--max-train-samples", "256", "--max-eval-samples", "64",
            "--logging-steps", "1", "--mixed-precision", "fp16" if run.cuda else "no", "--checkpoint-every", "1000"]
    if run.tiny:
        base += ["--num-layers", "2", "--hidden-size", "32", "--num-heads", "4", "--intermediate-size", "64"]
    original = {"make_optimizer": loop.make_optimizer, "make_scheduler": loop.make_scheduler,
                "to_device": loop.to_device}
    seen: dict = {}

    def sgd(model, cfg):
        coefficients = [*head_coefficients(model), *neuron_coefficients(model)]
        seen["first"] = first_step_sgd(model.parameters(), cfg.learning_rate, coefficients)
        return seen["first"]

    def counted(model, cfg):
        optimizer = original["make_optimizer"](model, cfg)
        count_steps(optimizer, seen)
        return optimizer

    def scheduler(optimizer, *args, **kwargs):
        seen["scheduler"] = original["make_scheduler"](optimizer, *args, **kwargs)
        return seen["scheduler"]

    def poisoned(batch, device):  # the micro-batch of step `nan_step`: NaN pixels
        moved = original["to_device"](batch, device)
        seen["micro"] = seen.get("micro", 0) + 1
        if seen["micro"] == nan_step:
            moved["pixel_values"] = moved["pixel_values"] * float("nan")
        return moved

    def train(name, flags):
        with quiet() as sink:
            code = entry.main(["--output-dir", str(run.work / "fp16_loop" / name), *base, *flags])
        if code:
            raise RuntimeError(f"main.py {name} exited {code}: {sink.getvalue()[-600:]}")

    numbers, failures = {"GradScaler": "accelerate's (fp16)" if run.cuda else "a CPU GradScaler (emulated)"}, []
    deltas, signs = {}, None
    try:
        with cpu_grad_scaler(run):
            # 1. the L1 part of the step: SGD, constant lr, no clipping, with and without L1
            loop.make_optimizer = sgd
            for l1 in (strength, 0.0):
                flags = ["--learning-rate", str(lr), "--lr-scheduler", "constant", "--max-grad-norm", "0",
                         "--l1-self", str(l1), "--l1-inter", str(l1), "--max-steps", "3"]
                train(f"l1-{l1}", flags)
                first = seen.pop("first")
                if first.before is None:
                    raise RuntimeError("no optimizer step was taken in 3 steps (every step overflowed?)")
                deltas[l1], signs = first.delta(), first.signs()
            loop.make_optimizer = counted
            part, bad = l1_step_verdict(deltas, signs, lr, strength, "would be lr*l1/65536 ~ "
                                        f"{lr * strength / 2 ** 16:.1e}")
            numbers.update(part)
            failures += bad
            # 2. a NaN batch: its step is skipped, the scheduler does not advance on it, the run goes on
            loop.make_scheduler, loop.to_device = scheduler, poisoned
            train("nan", ["--learning-rate", "1e-3", "--lr-scheduler", "linear", "--warmup-ratio", "0.3",
                          "--l1-self", "1e-4", "--l1-inter", "1e-4"])
    finally:
        loop.make_optimizer, loop.make_scheduler, loop.to_device = original.values()
    if seen.get("micro", 0) < nan_step:
        raise RuntimeError("the NaN batch was never served: earlybird.training.loop no longer moves batches with "
                           "its to_device (update this check)")
    part, bad = nan_step_verdict(run.work / "fp16_loop" / "nan" / "records", steps, nan_step, seen["taken"],
                                 seen["scheduler"].last_epoch)
    numbers.update(part)
    return {**numbers, "failures": failures + bad}


def count_steps(optimizer, seen: dict) -> None:
    """seen["taken"]: the optimizer steps actually taken (a step the GradScaler skips never runs the optimizer's)."""
    seen["taken"] = 0

    def taken(*_):
        seen["taken"] += 1

    getattr(optimizer, "optimizer", optimizer).register_step_post_hook(taken)


def nan_step_verdict(records_dir: Path, steps: int, nan_step: int, taken: int, scheduler_steps: int) -> tuple[dict, list]:
    """A NaN at step `nan_step`: that step's coefficients are the step before's (skipped), every step is recorded,
    the optimizer took fewer steps than the loop counted, and the scheduler advanced once per step taken."""
    import numpy as np

    from earlybird.records import load_records

    records = load_records(records_dir)
    recorded = records.steps.tolist()
    numbers = {"NaN at step": nan_step, "steps counted": steps, "optimizer steps taken": taken,
               "scheduler steps": scheduler_steps,
               "coefficients finite": bool(np.isfinite(records.msa).all() and np.isfinite(records.mlp).all())}
    failures = []
    if recorded != list(range(1, steps + 1)):
        failures.append(f"records hold steps {recorded}, expected 1..{steps}")
    else:
        i = nan_step - 1
        skipped = bool((records.msa[i] == records.msa[i - 1]).all() and (records.mlp[i] == records.mlp[i - 1]).all())
        numbers["NaN step left the coefficients as they were"] = skipped
        if not skipped:
            failures.append(f"step {nan_step} (NaN) changed the coefficients: not skipped")
    if taken >= steps:
        failures.append(f"the optimizer took {taken} steps of {steps}: the NaN step was not skipped")
    if scheduler_steps != taken:
        failures.append(f"the scheduler advanced {scheduler_steps} times for {taken} optimizer steps taken (expected: "
                        "only on steps taken, as transformers' Trainer)")
    if not numbers["coefficients finite"]:
        failures.append("non-finite coefficients after the NaN step")
    return numbers, failures


@check("fp16_trainer", 15, 30, "fp16 GradScaler + L1 through a transformers Trainer with EarlyBirdCallback; NaN loss")
def fp16_trainer(run: Run) -> dict:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments, ViTForImageClassification

    from earlybird.hf import EarlyBirdCallback
    from earlybird.slimming import head_coefficients, neuron_coefficients

    size = 32 if run.tiny else 224
    lr, strength, steps, nan_step = 0.05, 0.1, 6, 4

    class Images(torch.utils.data.Dataset):
        def __init__(self, n=96):
            generator = torch.Generator().manual_seed(0)
            self.labels = torch.arange(n) % 10
            self.pixels = torch.randn(n, 3, size, size, generator=generator)

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return {"pixel_values": self.pixels[i], "labels": self.labels[i]}

    class NaNAt(Trainer):
        """The loss of step `nan_step` (1-based) is NaN: its gradients are, and the scaler must skip that step."""

        def compute_loss(self, model, inputs, *args, **kwargs):
            loss = super().compute_loss(model, inputs, *args, **kwargs)
            return loss * float("nan") if self.state.global_step + 1 == nan_step and self.poison else loss

    class Watch(TrainerCallback):
        def __init__(self):
            self.first, self.calls, self.seen = None, 0, {}

        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            count_steps(optimizer, self.seen)

        def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
            self.before = [c.detach().float().cpu().clone() for c in [*head_coefficients(model),
                                                                      *neuron_coefficients(model)]]

        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            self.calls += 1
            if self.first is None and not self.trainer.accelerator.optimizer_step_was_skipped:
                after = [c.detach().float().cpu() for c in [*head_coefficients(model), *neuron_coefficients(model)]]
                self.first = (torch.cat([(a - b).flatten() for a, b in zip(after, self.before)]),
                              torch.cat([b.sign().flatten() for b in self.before]))

    def train(name, l1, poison, **overrides):
        torch.manual_seed(0)
        config = vit_config(run.tiny, self_slimming=True, inter_slimming=True)
        model = ViTForImageClassification(config)
        values = dict(max_steps=3, per_device_train_batch_size=8, learning_rate=lr, lr_scheduler_type="constant",
                      use_cpu=not run.cuda, report_to="none", disable_tqdm=True, save_strategy="no",
                      logging_steps=1, seed=0, data_seed=0, optim="sgd", weight_decay=0.0, max_grad_norm=0.0,
                      fp16=True)
        args = TrainingArguments(str(run.work / "fp16_trainer" / name), **{**values, **overrides})
        watch = Watch()
        trainer = NaNAt(model=model, args=args, train_dataset=Images(),
                        callbacks=[EarlyBirdCallback(l1_self=l1, l1_inter=l1), watch])
        trainer.poison, watch.trainer = poison, trainer
        if not run.cuda:  # as tests/test_hf_callback.py: the accelerate GradScaler path on the CPU
            trainer.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16)
            trainer.accelerator.native_amp = True
        with quiet():
            trainer.train()
        return trainer, watch

    numbers = {"GradScaler": "accelerate's (fp16)" if run.cuda else "a CPU GradScaler (emulated)"}
    deltas, signs = {}, None
    for l1 in (strength, 0.0):
        _, watch = train(f"l1-{l1}", l1, poison=False)
        if watch.first is None:
            raise RuntimeError("no optimizer step was taken in 3 steps (every step overflowed?)")
        deltas[l1], signs = watch.first
    numbers_l1, failures = l1_step_verdict(deltas, signs, lr, strength, f"would be ~{lr * strength / 2 ** 16:.1e}")
    numbers.update(numbers_l1)

    trainer, watch = train("nan", 1e-4, poison=True, max_steps=steps, learning_rate=1e-3, optim="adamw_torch",
                           lr_scheduler_type="linear", warmup_steps=2)
    if trainer.state.global_step != steps:
        failures.append(f"global_step {trainer.state.global_step}, expected {steps}")
    part, bad = nan_step_verdict(run.work / "fp16_trainer" / "nan" / "records", steps, nan_step, watch.seen["taken"],
                                 trainer.lr_scheduler.last_epoch)
    numbers.update(part)
    return {**numbers, "global_step": trainer.state.global_step, "failures": failures + bad}


# --------------------------------------------------------------------------- EB-Train end to end, crash and resume


def jpeg_folder(run: Run) -> Path:
    """An imagefolder of small JPEGs (train / validation, 4 classes by dominant colour): made once per run."""
    if "jpegs" in run.shared:
        return run.shared["jpegs"]
    import numpy as np
    from PIL import Image

    path = run.work / "jpegs"
    rng = np.random.default_rng(0)
    counts = {"train": 64, "validation": 16} if run.tiny else {"train": 320, "validation": 64}
    for split, count in counts.items():
        for i in range(count):
            label = i % 4
            folder = path / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 120, size=(16, 16, 3))
            pixels[..., label % 3] += 100 + 30 * (label // 3)
            Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).resize((64, 48)).save(folder / f"{i}.jpg",
                                                                                        quality=90)
    run.shared["jpegs"] = path
    return path


def model_dir(run: Run) -> Path:
    """A random-init ViT (Base; --tiny: tiny) saved as a local 'pretrained' model with its image processor: no
    download, no pretrained weights."""
    if "model" in run.shared:
        return run.shared["model"]
    import torch
    from transformers import ViTModel
    from transformers.models.vit import ViTImageProcessorPil

    path = run.work / ("vit-tiny" if run.tiny else "vit-base")
    config = vit_config(run.tiny)
    torch.manual_seed(0)
    ViTModel(config, add_pooling_layer=False).save_pretrained(path)
    size = config.image_size
    ViTImageProcessorPil(size={"height": size, "width": size}, image_mean=[0.5] * 3,
                         image_std=[0.5] * 3).save_pretrained(path)
    run.shared["model"] = path
    return path


def slim_vit(run: Run, output: Path, extra: list[str], steps: int, batch: int, checkpoint_every: int) -> tuple[int, str]:
    """Finetuning/scripts/slim_vit.bash with this run's settings (environment variables, the entry point's other
    flags through EXTRA_ARGS). On CUDA the script runs as it is (accelerate launch); on the CPU its command (DRY_RUN=1)
    runs in-process: seconds of accelerate start-up per run saved, the same flags."""
    launch = (ROOT / "Finetuning" / "scripts" / "launch.bash").read_text()
    # one process, no accumulation: the per-device batch is the global batch, whichever variable the scripts take
    batch_variable = "GLOBAL_BATCH" if "GLOBAL_BATCH" in launch else "BATCH_SIZE"
    env = {**os.environ, "MODEL": str(model_dir(run)), "DATASET": str(jpeg_folder(run)), "OUTPUT_DIR": str(output),
           "MAX_STEPS": str(steps), batch_variable: str(batch), "GRAD_ACCUM": "1", "EVAL_BATCH_SIZE": str(batch),
           "CHECKPOINT_EVERY": str(checkpoint_every), "EVAL_EVERY": "0", "WORKERS": "2" if run.tiny else "8",
           "WARMUP_RATIO": "0.1", "LEARNING_RATE": "1e-3" if run.tiny else "1e-4", "L1_SELF": "1e-3", "L1_INTER": "1e-3",
           "MIXED_PRECISION": "bf16" if run.cuda else "no", "NUM_PROCESSES": "1", "DEVICE": run.device.type,
           "PYTHON": sys.executable, "ACCELERATE": str(Path(sys.executable).with_name("accelerate")),
           "EXTRA_ARGS": " ".join(["--disable-tqdm", "--logging-steps", "5", *extra])}
    script = ROOT / "Finetuning" / "scripts" / "slim_vit.bash"
    if run.cuda:
        limit = max(60.0, run.left() + 60)  # the budget guard's last word: a hung run is a failed check
        try:
            proc = subprocess.run(["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=limit)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"slim_vit.bash ran past {limit:.0f} s (the budget); stopped") from None
        return proc.returncode, (proc.stdout + proc.stderr)[-400:]
    # PYTHON=false: launch.bash's CUDA probe (a python importing torch, seconds) answers "no GPU" at once
    for python in ("false", sys.executable):
        proc = subprocess.run(["bash", str(script)], cwd=ROOT, env={**env, "DRY_RUN": "1", "PYTHON": python},
                              capture_output=True, text=True)
        command = [line for line in proc.stderr.splitlines() if line.startswith("+ ")]
        if proc.returncode == 0 and command:
            break
    if proc.returncode or not command:
        return proc.returncode or 1, proc.stderr[-400:]
    words = shlex.split(command[-1][2:])
    argv = words[[i for i, w in enumerate(words) if w.endswith("run_vit.py")][-1] + 1:]
    from earlybird.training.entrypoints import load_entry_point

    entry = load_entry_point(ROOT / "Finetuning/run_vit.py", "gpu_check_run_vit")
    with quiet() as sink:
        code = entry.main(argv)
    return code, sink.getvalue()[-400:]


@check("ebtrain", 25, 200, "EB-Train through slim_vit.bash: uninterrupted vs crashed + --resume")
def ebtrain(run: Run) -> dict:
    import numpy as np

    from earlybird.records import load_records

    # the crash between two checkpoints (the resumed run redoes steps and truncates its records), before the draw
    steps, crash, every = (30, 8, 3) if run.tiny else (80, 15, 12)
    batch = 8 if run.tiny else 32
    eb = ["--eb-method", "slope", "--self-pruning-ratio", "0.3", "--inter-pruning-ratio", "0.3",
          "--eb-smooth", "3", "--eb-window", "10", "--eb-every", "2"]
    base = run.work / "ebtrain"
    outcomes = {}
    for name, extra in (("uninterrupted", eb), ("crashed", [*eb, "--debug-crash-at-step", str(crash)]),
                        ("resumed", [*eb, "--resume"])):
        output = base / ("uninterrupted" if name == "uninterrupted" else "interrupted")
        code, tail = slim_vit(run, output, extra, steps, batch, every)
        outcomes[name] = code
        # the crash: exit 3 from the entry point (accelerate launch reports a failed child as 1)
        if (code == 0) == (name == "crashed"):
            raise RuntimeError(f"slim_vit.bash ({name}) exited {code}: {tail}")
        if name == "crashed" and (output / "results.json").exists():
            raise RuntimeError(f"slim_vit.bash ({name}) exited {code} but wrote results.json: {tail}")
    summaries = {k: json.loads((base / k / "ebtrain.json").read_text()) for k in ("uninterrupted", "interrupted")}
    results = {k: json.loads((base / k / "results.json").read_text()) for k in ("uninterrupted", "interrupted")}
    records = {k: load_records(base / k / "records") for k in ("uninterrupted", "interrupted")}
    a, b = records["uninterrupted"], records["interrupted"]
    same_steps = a.steps.tolist() == b.steps.tolist()
    diff = max(float(np.abs(a.msa - b.msa).max()), float(np.abs(a.mlp - b.mlp).max())) if same_steps else float("inf")
    draws = {k: v.get("draw_step") for k, v in summaries.items()}
    tolerance = 1e-3 if run.cuda else 0.0  # CUDA kernels need not be bitwise deterministic; the CPU's are
    numbers = {"steps": steps, "crash at": crash, "checkpoint every": every, "draw step (uninterrupted / resumed)": f"{draws['uninterrupted']} / "
               f"{draws['interrupted']}", "records max abs diff": diff, "tolerance": tolerance,
               "final accuracy (uninterrupted / resumed)": " / ".join(
                   f"{results[k].get('eval_accuracy', results[k].get('accuracy', float('nan'))):.4f}"
                   for k in ("uninterrupted", "interrupted")),
               "mixed precision": "bf16" if run.cuda else "no (CPU)",
               "launch": "slim_vit.bash (accelerate launch)" if run.cuda else "slim_vit.bash's command, in-process"}
    failures = []
    if draws["uninterrupted"] is None:  # what is compared is the resume; say that this run had no draw to compare
        numbers["note"] = f"no early bird drawn in {steps} steps: the draw is not compared, the records are"
    if draws["uninterrupted"] != draws["interrupted"]:
        failures.append(f"draw steps differ: {draws['uninterrupted']} vs {draws['interrupted']}")
    if not same_steps:
        failures.append(f"recorded steps differ ({len(a.steps)} vs {len(b.steps)} rows)")
    elif diff > tolerance:
        failures.append(f"records differ by {diff:.2e} > {tolerance:g}")
    return {**numbers, "failures": failures}


# --------------------------------------------------------------------------- throughput


@check("throughput", 20, 90, "images/s: bare model step vs patched (slimming on) vs our loop vs the data loader")
def throughput(run: Run) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from earlybird.data import common, images
    from earlybird.slimming import l1_penalty

    dtype = "bf16" if run.cuda else "fp32"
    batch = 8 if run.tiny else 64
    repeats = 3 if run.tiny else 20
    patched_cls, pristine_cls = classes("vit")
    clock = Clock(run.device, cpu_clock="wall")
    rates = {}
    inputs = make_inputs("vit", run.tiny, run.device, batch=batch)
    inputs["labels"] = torch.randint(0, 10, (batch,), device=run.device)
    for label, cls, flags in (("bare model step (unpatched)", pristine_cls, {}),
                              ("patched step, slimming on + L1", patched_cls,
                               dict(self_slimming=True, inter_slimming=True))):
        torch.manual_seed(0)
        model = cls(vit_config(run.tiny, **flags)).train().to(run.device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

        def step():
            with autocast(run.device, dtype):
                loss = model(**inputs).loss
            (loss + (l1_penalty(model, 1e-4, 1e-4) if flags else 0.0)).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        for _ in range(2):
            step()
        spans = [clock.time(step).wall for _ in range(repeats)]
        rates[label] = batch / statistics.median(spans)
        del model, optimizer
    # our loop: run_vit.py on the JPEG folder, images/s over its training wall time (its first steps included)
    steps = 6 if run.tiny else 60
    output = run.work / "throughput-loop"
    code, tail = slim_vit(run, output, ["--max-eval-samples", str(batch)], steps, batch, checkpoint_every=10 * steps)
    if code:
        raise RuntimeError(f"the loop's run exited {code}: {tail}")
    result = json.loads((output / "results.json").read_text())
    rates["our loop (run_vit.py, JPEGs, slimming + L1 + records)"] = steps * batch / result["train_wall_s"]
    # the data loader alone: decoding + augmentation, as the loop's workers do it
    split = common.load_dataset_any(str(jpeg_folder(run)), cache_dir=str(run.work / "hf-cache"),
                                    builder="imagefolder")["train"]
    size = vit_config(run.tiny).image_size
    dataset = images.ImageClassificationDataset(split, "image", "label",
                                                images.ImageTransform("train", size, (0.5,) * 3, (0.5,) * 3))
    workers = 2 if run.tiny else min(8, os.cpu_count() or 1)
    loader = DataLoader(dataset, batch_size=batch, collate_fn=images.collate_images, num_workers=workers, shuffle=True)
    tic = time.perf_counter()
    served = sum(len(b["labels"]) for b in loader)
    rates[f"data loader alone ({workers} workers)"] = served / (time.perf_counter() - tic)
    rows = [{"what": k, "images/s": v} for k, v in rates.items()]
    ratio = rates["patched step, slimming on + L1"] / rates["bare model step (unpatched)"]
    return {"rows": rows, "patched / bare": ratio, "batch": batch, "dtype": dtype, "failures": []}


# --------------------------------------------------------------------------- main


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="gpu_check.py", description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="default cuda")
    parser.add_argument("--tiny", action="store_true", help="tiny configs and runs (the test suite's CPU pass)")
    parser.add_argument("--out", default=str(DEFAULT_OUT),
                        help="where gpu_check.json and gpu_check.md go (default bench/results/gpu_check/)")
    parser.add_argument("--budget-s", type=float, default=480.0,
                        help="seconds for all checks (default 480); a check that would run past it is skipped")
    parser.add_argument("--only", default=None, help=f"comma-separated checks (default all: {', '.join(CHECKS)})")
    parser.add_argument("--workdir", default=None, help="where the runs and images go (default: a temporary directory)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default torch's)")
    args = parser.parse_args(argv)
    if args.budget_s <= 0:
        parser.exit(2, f"gpu_check.py: error: --budget-s: expected a positive number of seconds, got {args.budget_s:g}\n")
    if args.only:
        unknown = [n for n in args.only.split(",") if n not in CHECKS]
        if unknown:
            parser.exit(2, f"gpu_check.py: error: --only: unknown check(s) {', '.join(unknown)}; expected some of "
                           f"{', '.join(CHECKS)}\n")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = resolve_device(args, "gpu_check.py")
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    selected = {n: c for n, c in CHECKS.items() if not args.only or n in args.only.split(",")}
    run = Run(args, device)
    use_cpu = os.environ.get("ACCELERATE_USE_CPU")
    if device.type == "cpu":  # the in-process runs stay on the CPU on a machine with a GPU too (accelerate's switch)
        os.environ["ACCELERATE_USE_CPU"] = "1"
    try:
        code = run.run_all(selected)
    finally:
        if use_cpu is None:
            os.environ.pop("ACCELERATE_USE_CPU", None)
        else:
            os.environ["ACCELERATE_USE_CPU"] = use_cpu
        if args.workdir is None:
            import shutil

            shutil.rmtree(run.work, ignore_errors=True)
    print(f"[gpu_check] wrote {run.out / 'gpu_check.json'} and {run.out / 'gpu_check.md'}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
