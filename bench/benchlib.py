"""What every benchmark script shares: its command line (--quick, --threads, --device, --dtype, --out), the one
clock every timed script reads (`Clock`), and how it hands over its table.

Imported by the scripts in this folder (`python bench/<name>.py` puts the folder first on sys.path) and by
`tools/gpu_check.py`.

The clock, by device:
- CPU (the default): the process's CPU time (`time.process_time`), with one thread the work done and barely disturbed
  by other jobs on a shared machine -- the method every committed CPU figure was measured with -- and wall time
  beside it.
- CUDA (`--device cuda`): kernels run asynchronously, so neither clock of the host says how long the GPU took. The
  figure is the time between two CUDA events recorded on the current stream around the timed code; the wall time is
  taken between two `torch.cuda.synchronize()` calls. Inputs and models are on the device before the clock starts.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

DEVICES = ("cpu", "cuda")
DTYPES = ("fp32", "bf16")


def make_parser(doc: str, quick_help: str, threads: bool = True, device: bool = False) -> argparse.ArgumentParser:
    """The parser of a benchmark: its description is the first line of the script's docstring. `device`: the
    benchmark times model passes and takes --device / --dtype."""
    parser = argparse.ArgumentParser(description=doc.strip().split("\n")[0])
    parser.add_argument("--quick", action="store_true", help=quick_help)
    if threads:
        parser.add_argument("--threads", type=int, default=0,
                            help="torch threads (default 0: torch's; quick: 1); 1 is steadiest on a shared machine")
    if device:
        add_device_arguments(parser)
    parser.add_argument("--out", help="also write the markdown to this file")
    return parser


def add_device_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=DEVICES, default="cpu",
                        help="where models and inputs live (default cpu: CPU time; cuda: CUDA-event time)")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32",
                        help="fp32 (default), or bf16: the timed passes run under torch.autocast(bfloat16)")


def set_threads(args) -> None:
    """--threads N, or one thread for a quick pass (two subprocesses share two cores in the test suite)."""
    if getattr(args, "threads", 0) or args.quick:
        import torch

        torch.set_num_threads(args.threads or 1)


def cuda_unavailable() -> str | None:
    """Why `--device cuda` cannot run here (None: it can)."""
    import torch

    if torch.cuda.is_available():
        return None
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no GPU"


def resolve_device(args, prog: str | None = None):
    """The torch.device of --device; `--device cuda` without CUDA is one line on stderr and exit status 2."""
    import torch

    if getattr(args, "device", "cpu") == "cuda":
        why = cuda_unavailable()
        if why is not None:
            prog = prog or Path(sys.argv[0]).name
            print(f"{prog}: error: --device cuda: {why}; expected a machine with a CUDA GPU, or --device cpu",
                  file=sys.stderr, flush=True)
            raise SystemExit(2)
    return torch.device(getattr(args, "device", "cpu"))


def autocast(device, dtype: str = "fp32"):
    """The context the timed passes run in: torch.autocast(bfloat16) for --dtype bf16, else nothing."""
    if dtype == "fp32":
        return contextlib.nullcontext()
    import torch

    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def to_device(batch: dict, device) -> dict:
    """A batch on the device (done once, before timing: the transfer is not part of the timed step)."""
    return {key: value.to(device) for key, value in batch.items()}


def device_label(device) -> str:
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"CUDA {torch.cuda.get_device_name(device)}"
    return "CPU"


@dataclass
class Span:
    """One timed interval: `seconds` is the clock's figure (CPU: process CPU time; CUDA: CUDA-event time), `wall`
    the elapsed time (on CUDA between synchronisations)."""

    seconds: float = 0.0
    wall: float = 0.0


class Clock:
    """The one timer of the benchmarks (see the module docstring for what it reads on each device).

        clock = Clock(device)
        with clock.span() as span:
            step()
        span.seconds, span.wall

    `mark()` / `elapsed(start, end)` time pieces inside a pass (forward hooks) without a synchronisation in between:
    on CUDA a mark is an event recorded on the stream, read when `elapsed` is called (which synchronises once).
    """

    CPU_CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}

    def __init__(self, device="cpu", cpu_clock: str = "cpu"):
        """`cpu_clock`: what `seconds` is on the CPU, "cpu" (process CPU time, default) or "wall"."""
        import torch

        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._cpu_clock = self.CPU_CLOCKS[cpu_clock]  # not read on CUDA
        self.name = "CUDA-event time" if self.cuda else {"cpu": "CPU time", "wall": "wall time"}[cpu_clock]
        self._torch = torch

    def synchronize(self) -> None:
        if self.cuda:
            self._torch.cuda.synchronize(self.device)

    def mark(self):
        if self.cuda:
            event = self._torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return self._cpu_clock()

    def elapsed(self, start, end) -> float:
        if self.cuda:
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        return end - start

    @contextlib.contextmanager
    def span(self):
        span = Span()
        self.synchronize()  # the work queued before is not this span's
        wall = time.perf_counter()
        start = self.mark()
        yield span
        end = self.mark()
        self.synchronize()
        span.wall = time.perf_counter() - wall
        span.seconds = self.elapsed(start, end)

    def time(self, fn, *args, **kwargs) -> Span:
        with self.span() as span:
            fn(*args, **kwargs)
        return span


def emit(text: str, args) -> int:
    """Print the markdown and write it to --out; the exit status of a finished benchmark."""
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def bert_train_step_seconds(model, repeats: int, device="cpu", dtype: str = "fp32") -> float:
    """Median seconds (wall time on the CPU, as the per-step costs it is put against; CUDA-event time on a GPU) of a
    train step (forward, backward, AdamW) of a BERT classifier at batch 8 x 128, after one untimed step: the
    yardstick the per-step costs of the recorder and the callback are put against."""
    import torch

    clock = Clock(device, cpu_clock="wall")
    model.to(clock.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    inputs = to_device({"input_ids": torch.randint(0, 1000, (8, 128)), "labels": torch.randint(0, 2, (8,))},
                       clock.device)

    def step():
        with autocast(clock.device, dtype):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    times = [clock.time(step).seconds for _ in range(repeats + 1)]
    return statistics.median(times[1:])
