"""Loop overhead: a step of the real training loop vs the bare model step, on the digits default; startup time; and the
throughput of the image loader on files.

The real loop is the entry point's (`ViT_pretraining/main.py`, the digits preset: small ViT, batch 64) with both
slimmings, L1 1e-4 on both and the coefficients recorded every step -- a default slimming run as `reproduce.sh` makes
it, tqdm and the loss log every 50 steps included -- called in-process through `main(argv)`, so its `Trainer`
(`earlybird/training/loop.py`) runs with the entry point's data pipeline. The bare step is the same model (built by the
same task with the same slimming flags and weights), the same optimizer (`make_optimizer`: AdamW, the same parameter
groups) and the same loss on one pre-made batch: forward, backward, AdamW step, zero_grad -- nothing else.

Side by side, alternating: the bench wraps `Trainer._micro_batches` so that, every K loop steps, K bare steps run
from inside the loop's batch iterator (same process, same moment, same machine load); the time between two such
pauses is K full loop steps. The first round is a warm-up and is dropped; the figure is the median over rounds of
(loop time / bare time). The breakdown of the loop's step comes from timestamps around its parts in the same run
(batch fetch; the loss to the end of backward, L1 penalty included; gradient clipping + AdamW step; the recorder;
the log lines; the rest: schedule, zero_grad, tqdm, the FLOP count).

Startup: seconds from launching the entry point to the end of its first optimizer step (it is stopped there by the
test-only `EARLYBIRD_FAULT=step:kill@1`), against `python -c "import torch; from transformers import ViTConfig,
ViTForImageClassification"`, the import floor of any ViT run, alternated; medians of wall and of CPU time (user + sys
of the process).

Loader throughput (data from files, the ViT fine-tuning path): images per second that the training DataLoader
delivers -- decoding, RandomResizedCrop to 224, flip, normalisation, as `Finetuning/run_vit.py` sets them up -- from an
imagefolder of ImageNet-sized JPEGs (500x375, made here), with 0, 1, ... worker processes (up to the CPUs of this
machine), batches of 64, from the loader's creation to its last batch. Compare with what the model
consumes: on a GPU, images/s of a ViT-Base training step (see docs/benchmarks.md for the figure assumed).

`--device cuda`: the loop runs on the GPU (accelerate's device) and so does the bare step (model and batch moved there
once); the two are compared in wall time with a `torch.cuda.synchronize()` at each round's boundaries
(`benchlib.Clock`), and the per-part breakdown is host time (kernels run asynchronously: a part's time lands where
the host waits). `--device cpu` keeps the loop on the CPU on a machine with a GPU too (ACCELERATE_USE_CPU).
`--dtype bf16`: the loop with `--mixed-precision bf16`, the bare step under bf16 autocast.

    .venv/bin/python bench/loop_overhead.py [--quick] [--rounds N] [--chunk K] [--threads T] [--startup N]
                                            [--loader-images N] [--device cpu|cuda] [--dtype fp32|bf16] [--out FILE]
"""

from __future__ import annotations

import contextlib
import io
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchlib import Clock, autocast, device_label, emit, make_parser, resolve_device, set_threads, to_device  # noqa: E402
from earlybird.training.entrypoints import load_entry_point  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SLIM = ["--self-slimming", "--inter-slimming", "--l1-self", "1e-4", "--l1-inter", "1e-4"]
GOAL = 1.15
FLOOR = "import torch; from transformers import ViTConfig, ViTForImageClassification"  # what any ViT run imports
PARTS = ("data", "forward + backward", "optimizer", "recording", "logging")


class BareStep:
    """The trainer's model, rebuilt bare: same task, flags, weights and optimizer groups, one pre-made batch."""

    def __init__(self, trainer, batch: dict, dtype: str = "fp32"):
        from earlybird.training.loop import make_optimizer

        device = trainer.accelerator.device
        self.clock = Clock(device, cpu_clock="wall")
        self.model = trainer.task.build_model(trainer.config.slimming.model_flags).train()
        self.model.load_state_dict(trainer.unwrapped.state_dict())
        self.model.to(device)
        self.optimizer = make_optimizer(self.model, trainer.cfg)
        self.batch = to_device({k: v.clone() for k, v in batch.items() if isinstance(v, torch.Tensor)}, device)
        self.batch.update({k: v for k, v in batch.items() if not isinstance(v, torch.Tensor)})
        if trainer.task.prepare_batch is not None:  # as the loop does after the copy (images: the normalisation)
            self.batch = trainer.task.prepare_batch(self.batch, self.model.dtype)
        compute = trainer.task.compute_loss

        def loss():
            with autocast(device, dtype):
                return compute(self.model, self.batch) if compute is not None else self.model(**self.batch).loss

        self.loss = loss
        self.parts = defaultdict(float)
        self.run(1)  # warm-up: allocator, AdamW state
        self.parts.clear()

    def run(self, steps: int) -> float:
        """Seconds of `steps` bare steps (synchronised on CUDA; the parts are host time there)."""
        self.clock.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            t0 = time.perf_counter()
            self.loss().backward()
            t1 = time.perf_counter()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            t2 = time.perf_counter()
            self.parts["forward + backward"] += t1 - t0
            self.parts["optimizer"] += t2 - t1
        self.clock.synchronize()
        return time.perf_counter() - start


class Alternation:
    """Runs `chunk` bare steps after every `chunk` loop steps, from inside the loop's batch iterator."""

    def __init__(self, chunk: int, rounds: int, dtype: str = "fp32"):
        self.chunk, self.rounds, self.dtype = chunk, rounds, dtype
        self.loop: list[float] = []  # seconds per step, per round
        self.bare: list[float] = []
        self.parts = defaultdict(float)  # loop parts, summed over the measured rounds
        self.bare_parts: dict = {}
        self.measured_steps = 0
        self.closed = False

    def total_steps(self) -> int:
        # + 1: the iterator is asked for the batch after the last measured round, which closes that round
        return (self.rounds + 1) * self.chunk + 1

    def _hook(self, trainer) -> None:
        """Timestamps around the loop's parts (instance attributes: the library is not touched)."""
        clock = time.perf_counter
        marks = {}

        def timed_call(obj, name, before=None, after=None):
            original = getattr(obj, name)

            def wrapper(*args, **kwargs):
                if before:
                    before()
                start = clock()
                try:
                    return original(*args, **kwargs)
                finally:
                    if after:
                        after(start, clock())
            setattr(obj, name, wrapper)

        def loss_start():
            marks["loss"] = clock()

        def backward_end(start, end):
            self._add("forward + backward", end - marks.pop("loss", start))
            marks["backward"] = end

        def step_end(start, end):
            self._add("optimizer", end - marks.pop("backward", start))  # clipping + AdamW step

        timed_call(trainer, "_loss", before=loss_start)
        timed_call(trainer.accelerator, "backward", after=backward_end)
        timed_call(trainer.optimizer, "step", after=step_end)
        if trainer.recorder is not None:
            timed_call(trainer.recorder, "record", after=lambda s, e: self._add("recording", e - s))
        timed_call(trainer, "log_line", after=lambda s, e: self._add("logging", e - s))

    def _add(self, part: str, seconds: float) -> None:
        if not self.closed:
            self.parts[part] += seconds

    def interleave(self, trainer, source):
        self._hook(trainer)
        clock = time.perf_counter
        bare = None
        served = 0
        mark = clock()
        while True:
            if served and served % self.chunk == 0:
                bare.clock.synchronize()  # the loop's queued kernels belong to its round
                now = clock()
                loop = (now - mark) / self.chunk
                seconds = bare.run(self.chunk) / self.chunk
                if served == self.chunk:  # the warm-up round: dropped
                    self.parts.clear()
                    bare.parts.clear()
                else:
                    self.loop.append(loop)
                    self.bare.append(seconds)
                    self.measured_steps += self.chunk
                    self.closed = len(self.loop) == self.rounds  # the step after the last round is not measured
                mark = clock()
            start = clock()
            batch = next(source)
            self._add("data", clock() - start)
            if bare is None:
                bare = BareStep(trainer, batch, self.dtype)
                self.bare_parts = bare.parts
                mark += clock() - start  # building the bare model is not a loop step
            served += 1
            yield batch


def measure_loop(chunk: int, rounds: int, workdir: Path, device="cpu", dtype: str = "fp32") -> Alternation:
    from earlybird.training.loop import Trainer

    entry = load_entry_point(ROOT / "ViT_pretraining/main.py", "bench_loop_overhead_main")
    alternation = Alternation(chunk, rounds, dtype)
    original = Trainer._micro_batches

    def micro_batches(trainer):
        return alternation.interleave(trainer, original(trainer))

    argv = ["--output-dir", str(workdir / "run"), "--overwrite-output-dir", *SLIM,
            "--max-steps", str(alternation.total_steps()), "--mixed-precision", "bf16" if dtype == "bf16" else "no"]
    sink = io.StringIO()
    Trainer._micro_batches = micro_batches
    use_cpu = os.environ.get("ACCELERATE_USE_CPU")
    if torch.device(device).type == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "1"  # accelerate's own switch: the loop stays on the CPU beside a GPU
    else:
        os.environ.pop("ACCELERATE_USE_CPU", None)
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            code = entry.main(argv)
    finally:
        Trainer._micro_batches = original
        if use_cpu is None:
            os.environ.pop("ACCELERATE_USE_CPU", None)
        else:
            os.environ["ACCELERATE_USE_CPU"] = use_cpu
    if code or len(alternation.loop) != rounds:
        raise RuntimeError(f"the digits run failed (exit {code}, {len(alternation.loop)} rounds):\n{sink.getvalue()[-3000:]}")
    return alternation


def measure_startup(repeats: int, workdir: Path, threads: int | None) -> dict:
    """Median seconds of each launch, alternated: the entry point to its first step, and the import floor."""
    env = {**os.environ, "EARLYBIRD_FAULT": "step:kill@1"}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    entry = [sys.executable, str(ROOT / "ViT_pretraining" / "main.py"), "--output-dir", str(workdir / "startup"),
             "--overwrite-output-dir", "--disable-tqdm", *SLIM]
    floor = [sys.executable, "-c", FLOOR]
    times = {"entry": [], "floor": [], "entry_cpu": [], "floor_cpu": []}
    for rep in range(repeats):
        order = (("entry", entry), ("floor", floor)) if rep % 2 == 0 else (("floor", floor), ("entry", entry))
        for name, cmd in order:
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            start = time.perf_counter()
            proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            times[name].append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            times[f"{name}_cpu"].append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            expected = -signal.SIGKILL if name == "entry" else 0  # the entry point is stopped after its first step
            if proc.returncode != expected:
                raise RuntimeError(f"{' '.join(cmd)}: exit {proc.returncode}, expected {expected}\n{proc.stderr[-3000:]}")
    return {k: statistics.median(v) for k, v in times.items()}


def make_jpeg_folder(path: Path, count: int) -> Path:
    """imagefolder of `count` 500x375 JPEGs (quality 90) in 2 classes, smooth like photographs (upsampled noise)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(count):
        folder = path / "train" / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
        Image.fromarray(small).resize((500, 375), Image.BICUBIC).save(folder / f"{i}.jpg", quality=90)
    return path


def measure_loader(count: int, workers: list[int], workdir: Path, batch: int = 64) -> dict:
    """Images per second of the training DataLoader over JPEG files, per worker count."""
    from torch.utils.data import DataLoader

    from earlybird.data import common, images

    folder = make_jpeg_folder(workdir / "jpeg", count)
    split = common.load_dataset_any(str(folder), cache_dir=str(workdir / "cache"), builder="imagefolder")["train"]
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # ViT-Base's image processor
    dataset = images.ImageClassificationDataset(split, "image", "label", images.ImageTransform("train", 224, mean, std))
    assert dataset.decodes_from_files
    sampler = [common.EpochIndices(list(range(start, start + batch)), 0) for start in range(0, count - batch + 1, batch)]
    rates = {}
    for n in workers:
        # From the loader's creation (worker start-up included: once per run, small against 20 batches) to the last
        # batch; timing from the first batch instead would credit the batches the other workers made meanwhile.
        start = time.perf_counter()
        loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=images.collate_images, num_workers=n)
        served = sum(len(b["labels"]) for b in loader)
        rates[n] = served / (time.perf_counter() - start)
    return {"rates": rates, "default": common.default_num_workers(dataset)}


def report(alt: Alternation, startup: dict | None, loader: dict | None, threads: int, chunk: int, device="cpu",
           dtype: str = "fp32") -> str:
    ratios = [loop / bare for loop, bare in zip(alt.loop, alt.bare)]
    ratio = statistics.median(ratios)
    loop_ms, bare_ms = 1e3 * statistics.median(alt.loop), 1e3 * statistics.median(alt.bare)
    n = alt.measured_steps
    loop_total = 1e3 * sum(alt.loop) * chunk / n
    bare_total = 1e3 * sum(alt.bare) * chunk / n
    lines = [
        f"Loop overhead on the digits default (small ViT, batch 64, both slimmings + L1, recording every step): "
        f"{len(alt.loop)} rounds of {chunk} loop steps and {chunk} bare steps, alternating; torch {torch.__version__}, "
        f"{threads} thread(s), {device_label(device)}{', bf16' if dtype == 'bf16' else ''}",
        "",
        "| variant | ms / step (median of rounds) | ratio to bare (median of rounds) |",
        "|---|---:|---:|",
        f"| bare step (forward + backward + AdamW, pre-made batch) | {bare_ms:.2f} | 1.000 |",
        f"| training loop (`Trainer.fit` of `ViT_pretraining/main.py`) | {loop_ms:.2f} | {ratio:.3f} |",
        "",
        f"Where a step's time goes (ms / step, mean over the {n} measured steps of each):",
        "",
        "| part | loop | bare |",
        "|---|---:|---:|",
    ]
    named = 0.0
    for part in PARTS:
        loop_part = 1e3 * alt.parts.get(part, 0.0) / n
        named += loop_part
        bare_part = 1e3 * alt.bare_parts.get(part, 0.0) / n
        lines.append(f"| {part} | {loop_part:.2f} | {bare_part:.2f} |" if part in alt.bare_parts
                     else f"| {part} | {loop_part:.2f} | - |")
    lines += [
        f"| other (schedule, zero_grad, tqdm, FLOP count, coefficient read) | {loop_total - named:.2f} | - |",
        f"| total | {loop_total:.2f} | {bare_total:.2f} |",
        "",
        f"- Goal (loop <= {GOAL:.2f}x the bare step): {'met' if ratio <= GOAL else 'NOT met'} ({ratio:.3f}x; "
        f"rounds: {', '.join(f'{r:.3f}' for r in ratios)})",
    ]
    if startup is not None:
        lines += [
            "",
            "| startup (median of launches, alternated) | wall s | CPU s (user + sys) |",
            "|---|---:|---:|",
            f"| `ViT_pretraining/main.py` (digits, slimming) from launch to the end of its first step | "
            f"{startup['entry']:.2f} | {startup['entry_cpu']:.2f} |",
            f"| import floor: `python -c \"{FLOOR}\"` | {startup['floor']:.2f} | "
            f"{startup['floor_cpu']:.2f} |",
            f"| the entry point's own share (difference) | {startup['entry'] - startup['floor']:.2f} | "
            f"{startup['entry_cpu'] - startup['floor_cpu']:.2f} |",
            "",
            "- CPU time is the steadier figure on a shared machine (wall time there includes waiting for a core).",
        ]
    if loader is not None:
        rates = loader["rates"]
        lines += [
            "",
            f"Loader throughput, data from files (500x375 JPEGs, RandomResizedCrop 224 + flip, uint8 batches of 64; "
            f"{os.cpu_count()} CPUs here, default workers here: {loader['default']}):",
            "",
            "| worker processes | images / s |",
            "|---|---:|",
        ]
        lines += [f"| {n} | {rate:.0f} |" for n, rate in rates.items()]
        lines += ["", f"- One process decodes and augments {rates[0]:.0f} images/s here: a loader that must feed N "
                      f"images/s needs about N / {rates[0]:.0f} worker processes (and as many free CPU cores)."]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = make_parser(__doc__, "3 rounds of 5 steps, one startup launch each", device=True)
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds (default 10, quick 3)")
    parser.add_argument("--chunk", type=int, default=None, help="steps per variant and round (default 20, quick 5)")
    parser.add_argument("--startup", type=int, default=None, help="launches of each startup variant (default 3, "
                        "quick 1; 0: skip)")
    parser.add_argument("--loader-images", type=int, default=None,
                        help="JPEGs for the loader throughput (default 1280, quick 128; 0: skip)")
    args = parser.parse_args(argv)
    device = resolve_device(args, "loop_overhead.py")
    set_threads(args)
    rounds = args.rounds or (3 if args.quick else 10)
    chunk = args.chunk or (5 if args.quick else 20)
    launches = args.startup if args.startup is not None else (1 if args.quick else 3)
    jpegs = args.loader_images if args.loader_images is not None else (128 if args.quick else 1280)
    workers = list(range(0, min(2 if args.quick else 4, os.cpu_count() or 1) + 1))
    workdir = Path(tempfile.mkdtemp(prefix="eb-loop-overhead-"))
    try:
        alternation = measure_loop(chunk, rounds, workdir, device, args.dtype)
        startup = measure_startup(launches, workdir, args.threads) if launches else None
        loader = measure_loader(jpegs, workers, workdir) if jpegs else None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return emit(report(alternation, startup, loader, torch.get_num_threads(), chunk, device, args.dtype), args)


if __name__ == "__main__":
    sys.exit(main())
