"""What the early-bird detectors cost: time per check of each method at window 300 (the default) and 3,000, and a full
offline scan of 15k steps of BERT-base-sized records (msa 12 x 12, mlp 12 x 3072), with its peak memory.

Coefficients are synthetic, the model of `earlybird.synthetic` generated chunk by chunk (each coefficient moves
linearly from ~1.0 to its own final level, reached at half the run, plus Gaussian noise each step), so masks keep
changing in the first half and settle in the second. The scan records are written with `CoefficientRecorder` to a
temporary directory (15k steps = 2.2 GB; the step count is scaled down, with a note, when the disk is short) and deleted
afterwards. Masks: ratio 0.3, layerwise.

* Per check: stationarity methods (slope / mk / adf; smooth 200, every 100) are fed precomputed nuclear norms and
  the time of the `update_value` calls at checks is the test on the smoothed window; the per-step cost of a mask and
  its nuclear norm (batched, as the offline scan does) is listed separately. Hamming checks every step: the time of
  `update(step, mask)` with a FIFO of 5 (the default), 300 and 3,000 masks.
* Full scan: `load_records`, then each method's `detect(..., stop_at_draw=False)` (the CLI's `--full-trace`, the worst
  case; each call computes its own masks), and one pass that computes masks and norms once and feeds all four
  detectors. Each scan runs in a fresh subprocess; its peak RSS (VmHWM) includes the memory-mapped record pages it
  touched, and the anonymous peak (RssAnon, sampled every 10 ms) is what the scan itself allocates.
* Through the CLI, as a user runs it: `earlybird detect RECORDS --block both --method slope,mk,adf,hamming
  --full-trace --json` in a fresh process, `--rounds` times; with `--baseline SRC` (an earlier `earlybird/`, e.g.
  `git archive COMMIT earlybird | tar -x -C SRC`) that version too, as its users ran it (`--block msa`, then
  `--block mlp`: two processes), alternating with this tree's, and every run's JSON compared with the first.
  `--baseline` may be repeated as `LABEL=SRC`; a source whose `detect` has `--block both` runs it in one process.
  `--cli-only` writes the records and runs only these CLI scans (bench/results/detector_cost_cli.md).
* `--mask-cost RECORDS`: only `compute_mask` of the mlp block of existing records, in one call, this tree against each
  baseline in fresh processes, rotating, with the masks' hash compared (bench/results/detector_cost_cli.md).

    .venv/bin/python bench/detector_cost.py [--quick] [--steps N] [--dir DIR] [--baseline [LABEL=]SRC ...]
                                            [--rounds N] [--cli-only | --mask-cost RECORDS] [--out results.md]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from earlybird.detectors import DETECTORS, detect, detect_many, make_detector
from earlybird.masks import compute_mask, nuclear_norm

from benchlib import emit, make_parser

RATIO = 0.3
METHODS = tuple(DETECTORS)  # every registered detector


def trajectory(seed: int, layers: int, width: int, steps: int, plateau: int, chunk: int = 256):
    """Yield (start, coefficients (k, layers, width) float32) blocks of a synthetic run (earlybird.synthetic's model)."""
    rng = np.random.default_rng(seed)
    ladder = np.linspace(0.95, 0.99, width)
    final = ladder[rng.permutation(width)][None, :] + rng.normal(0.0, 0.0005, (layers, width))
    start = 1.0 + rng.uniform(-0.01, 0.01, (layers, width))
    for first in range(0, steps, chunk):
        t = np.arange(first, min(first + chunk, steps), dtype=np.float64)
        progress = np.minimum(t / plateau, 1.0)[:, None, None]
        block = start[None] + (final - start)[None] * progress + rng.normal(0.0, 0.0003, (len(t), layers, width))
        yield first, block.astype(np.float32)


def all_coefficients(seed, layers, width, steps, plateau) -> np.ndarray:
    return np.concatenate([b for _, b in trajectory(seed, layers, width, steps, plateau)])


# --------------------------------------------------------------------------- per check


def stationarity_check_ms(method: str, norms: np.ndarray, window: int, smooth: int, every: int) -> tuple[float, int]:
    detector = make_detector(method, window=window, smooth=smooth, every=every)
    times = []
    for step, value in enumerate(norms):
        before = len(detector.trace)
        start = time.perf_counter()
        detector.update_value(step, value)
        elapsed = time.perf_counter() - start
        if len(detector.trace) > before:
            times.append(elapsed)
    return 1e3 * statistics.median(times), len(times)


def hamming_check_ms(masks: np.ndarray, cached: int, skip: int) -> tuple[float, int]:
    detector = make_detector("hamming", cached=cached, threshold=1e-9)  # never draws: every check is a full one
    times = []
    for step, mask in enumerate(masks):
        start = time.perf_counter()
        detector.update(step, mask)
        elapsed = time.perf_counter() - start
        if step >= max(cached, skip):
            times.append(elapsed)
    return 1e3 * statistics.median(times), len(times)


def per_check_rows(quick: bool) -> list[dict]:
    layers = 4 if quick else 12
    shapes = {"msa": (layers, 12), "mlp": (layers, 256 if quick else 3072)}
    windows = (30, 300) if quick else (300, 3000)
    smooth, every = (20, 10) if quick else (200, 100)
    rows = []
    for block, (n_layers, width) in shapes.items():
        steps = smooth + max(windows) + 10 * every  # >= 10 checks at the largest window
        coefs = all_coefficients(1, n_layers, width, steps, plateau=steps)  # still moving: masks keep changing
        start = time.perf_counter()
        masks = compute_mask(coefs, RATIO, "layerwise")
        mask_us = 1e6 * (time.perf_counter() - start) / steps
        start = time.perf_counter()
        norms = nuclear_norm(masks)
        norm_us = 1e6 * (time.perf_counter() - start) / steps
        flips = float(np.mean((masks[1:] != masks[:-1]).reshape(steps - 1, -1).sum(axis=1)))
        shape = f"{block} {n_layers}x{width}"
        rows.append(dict(method="(every method) mask", params="compute_mask, batched", block=shape,
                         per=f"{mask_us:.3g} us / step", n=steps))
        rows.append(dict(method="(stationarity) nuclear norm", params="batched", block=shape,
                         per=f"{norm_us:.3g} us / step", n=steps))
        for method in ("slope", "mk", "adf"):
            for window in windows:
                ms, n = stationarity_check_ms(method, norms, window, smooth, every)
                rows.append(dict(method=method, params=f"window {window}, smooth {smooth}, every {every}", block=shape,
                                 per=f"{ms:.3g} ms / check", n=n, window=window, ms=ms))
        for cached in (5, *windows):
            # FIFO of `cached` masks: time the checks once it is full (the first `cached` only fill it).
            ms, n = hamming_check_ms(masks, cached, skip=0)
            rows.append(dict(method="hamming", params=f"FIFO {cached} masks, every 1 (~{flips:.0f} entries flip a step)",
                             block=shape, per=f"{ms:.3g} ms / check", n=n, window=cached, ms=ms))
    return rows


# --------------------------------------------------------------------------- full scan


def write_records(directory: Path, steps: int, layers: int, heads: int, neurons: int) -> float:
    import torch

    from earlybird.records import CoefficientRecorder

    # record() is a small torch copy: one thread, or a busy two-core machine makes it wait for a second core
    torch.set_num_threads(1)

    start = time.perf_counter()
    plateau = steps // 2
    # fsync off: the scan is what is measured, and 2 GB of fsyncs take minutes on a busy shared disk
    with CoefficientRecorder(directory, meta={"model_type": "bert", "synthetic": True}, fsync=False) as recorder:
        for (first, msa), (_, mlp) in zip(trajectory(2, layers, heads, steps, plateau),
                                          trajectory(3, layers, neurons, steps, plateau)):
            for i in range(len(msa)):
                recorder.record(first + i, msa=msa[i], mlp=mlp[i])
    return time.perf_counter() - start


class AnonPeak:
    """Samples RssAnon from /proc/self/status every 10 ms in a thread (the peak of what the process allocates)."""

    def __init__(self):
        self.peak = self.read()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def read(key: str = "RssAnon") -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
        return 0

    def _run(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.read())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.read())


def scan(spec: dict) -> list[dict]:
    """The scans of one block in this process (a subprocess of the benchmark): load, each method, one pass.

    Returns one dict per scan: seconds, draws, checks, the process's peak RSS so far (VmHWM), the anonymous-memory
    peak during the scan and the anonymous memory before it.
    """
    from earlybird.records import load_records

    import statsmodels.regression.linear_model  # noqa: F401  (imported up front: ~1 s, not part of a scan)
    import statsmodels.tsa.stattools  # noqa: F401
    import pymannkendall  # noqa: F401

    out, records, params = [], None, spec.get("params", {})
    for what in ("load", *METHODS, "one pass"):
        base_anon = AnonPeak.read()
        sampler = AnonPeak()
        start, cpu = time.perf_counter(), time.process_time()
        row = {"block": spec["block"], "what": what}
        if what == "load":
            records = load_records(spec["records"])  # maps both blocks, scans them for NaN/inf
        elif what == "one pass":
            row["draws"] = one_pass(records, spec["block"], params)
        else:
            result = detect(records, block=spec["block"], ratio=RATIO, method=what, stop_at_draw=False,
                            **params.get(what, {}))
            row.update(draws={what: result.draw_step}, checks=len(result.trace))
        row["seconds"], row["cpu"] = time.perf_counter() - start, time.process_time() - cpu
        row.update(peak_anon=sampler.stop(), base_anon=base_anon, peak_rss=AnonPeak.read("VmHWM"))
        out.append(row)
    return out


def one_pass(records, block: str, params: dict) -> dict:
    """The library's one pass (`detect_many`, what `earlybird detect --method all` runs): masks and nuclear norms
    computed once per block of steps and fed to all four detectors."""
    results = detect_many(records, block, RATIO, "layerwise", {m: params.get(m, {}) for m in METHODS},
                          stop_at_draw=False)
    return {m: r.draw_step for m, r in results.items()}


CLI_METHODS = ("slope", "mk", "adf", "hamming")


def cli_scan(records: Path, params: dict, blocks: tuple, source: str | None = None) -> dict:
    """`earlybird detect RECORDS --block B --method slope,mk,adf,hamming --full-trace --json` as a user runs it, one
    fresh process per entry of `blocks` (imports and loading included): wall time, the children's CPU time and the
    JSON lines printed. `source`: a directory holding another `earlybird/` package (an earlier commit, for a
    before/after comparison), run from there instead of this tree's."""
    flags = []
    for name, value in params.get("slope", {}).items():  # quick only: the stationarity detectors' smaller windows
        if name != "every":  # (--every would set Hamming's too; their checks are every 100 steps here)
            flags += [f"--{name}", str(value)]
    env = dict(os.environ)
    if source:
        env["PYTHONPATH"] = os.pathsep.join([source, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    load = os.getloadavg()[0]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    lines = []
    for block in blocks:
        # (python -c puts the working directory first on sys.path: the source's own directory when comparing)
        result = subprocess.run([sys.executable, "-c", "import sys; from earlybird.cli import main; sys.exit(main())",
                                 "detect", str(records), "--block", block, "--ratio", str(RATIO), "--scope",
                                 "layerwise", "--method", ",".join(CLI_METHODS), "--full-trace", "--json", *flags],
                                capture_output=True, text=True, check=False, env=env, cwd=source or None)
        if result.returncode:
            raise RuntimeError(f"earlybird detect ({source or 'this tree'}) failed:\n{result.stderr}")
        lines += [line for line in result.stdout.splitlines() if line]
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"blocks": blocks, "source": source, "seconds": seconds, "cpu": cpu, "lines": lines, "load": load}


def cli_rows(records: Path, params: dict, baselines: list[str], rounds: int) -> list[dict]:
    """The CLI scan of both blocks, `rounds` times: this tree in one process (`--block both`) and each baseline source
    `LABEL=DIR` (`DIR` alone: label "baseline") as its users ran it: `--block both` where its `detect` has it, else
    `--block msa`, then `--block mlp` (two processes); the order of the variants rotates each round."""
    variants = [("this tree", ("both",), None)]
    for spec in baselines:
        label, _, source = spec.rpartition("=")
        one_process = '"both")' in (Path(source) / "earlybird" / "cli.py").read_text()
        variants.append((label or "baseline", ("both",) if one_process else ("msa", "mlp"), source))
    rows = []
    for round_ in range(rounds):
        shift = round_ % len(variants)
        for name, blocks, source in variants[shift:] + variants[:shift]:
            rows.append({"variant": name, "round": round_, **cli_scan(records, params, blocks, source)})
    return rows


MASK_COST_CODE = """
import hashlib, json, sys, time
import numpy as np
from earlybird.masks import compute_mask
from earlybird.records import load_records
coefs = np.asarray(load_records(sys.argv[1]).block("mlp"))  # read once before timing
cpu, wall = time.process_time(), time.perf_counter()
masks = compute_mask(coefs, float(sys.argv[2]), "layerwise")
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
print(json.dumps({"cpu": cpu, "seconds": wall, "steps": len(coefs), "sha1": hashlib.sha1(np.packbits(masks)).hexdigest()}))
"""


def mask_cost_rows(records: str, baselines: list[str], rounds: int) -> list[dict]:
    """`compute_mask` of the mlp block of RECORDS in one call (as the scan's blocks of steps), in a fresh process per
    variant (this tree, then each `LABEL=SRC` baseline), `rounds` times, the order rotating: CPU and wall time, and a
    hash of the masks to compare."""
    variants = [("this tree", None)] + [((spec.rpartition("=")[0] or "baseline"), spec.rpartition("=")[2])
                                        for spec in baselines]
    rows = []
    for round_ in range(rounds):
        shift = round_ % len(variants)
        for name, source in variants[shift:] + variants[:shift]:
            env = dict(os.environ)
            if source:
                env["PYTHONPATH"] = os.pathsep.join([source, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
            load = os.getloadavg()[0]
            result = subprocess.run([sys.executable, "-c", MASK_COST_CODE, str(Path(records).resolve()), str(RATIO)],
                                    capture_output=True, text=True, check=True, env=env, cwd=source or None)
            rows.append({"variant": name, "round": round_, "load": load, **json.loads(result.stdout.splitlines()[-1])})
    return rows


def render_mask_cost(rows: list[dict], records: str) -> str:
    steps = rows[0]["steps"]
    lines = [f"`compute_mask` of the 12 x 3072 (mlp) block of {steps} steps of {records} (synthetic, written by this "
             f"benchmark: linear to a plateau at half the run + noise), ratio {RATIO}, layerwise, one call, a fresh "
             "process per run; runs rotate between the variants:", "",
             "| variant | round | CPU (s) | CPU per step (us) | wall (s) | load average before | masks (sha1) |",
             "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['round'] + 1} | {r['cpu']:.2f} | {1e6 * r['cpu'] / steps:.0f} | "
                     f"{r['seconds']:.2f} | {r['load']:.1f} | {r['sha1'][:12]} |")
    variants = list(dict.fromkeys(r["variant"] for r in rows))
    cpu = {v: statistics.median(r["cpu"] for r in rows if r["variant"] == v) for v in variants}
    wall = {v: statistics.median(r["seconds"] for r in rows if r["variant"] == v) for v in variants}
    same = len({r["sha1"] for r in rows}) == 1
    lines += ["", "- Medians: " + "; ".join(
        f"{v} {cpu[v]:.2f} s CPU ({1e6 * cpu[v] / steps:.0f} us a step; {cpu[v] / cpu['this tree']:.2f}x this tree's), "
        f"{wall[v]:.2f} s wall ({wall[v] / wall['this tree']:.2f}x)" for v in variants)
        + f"; masks {'identical' if same else 'DIFFERENT'} in every run."]
    return "\n".join(lines)


def in_subprocess(spec: dict) -> list[dict]:
    result = subprocess.run([sys.executable, __file__, "--scan", json.dumps(spec)], capture_output=True, text=True,
                            check=False)
    if result.returncode:
        raise RuntimeError(f"scan {spec} failed:\n{result.stderr}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def scan_rows(quick: bool, steps: int | None, where: str | None, baselines: list[str] = (),
              rounds: int = 1, cli_only: bool = False) -> tuple[list[dict], list[str], dict]:
    layers, heads, neurons = (4, 12, 256) if quick else (12, 12, 3072)
    wanted = steps or (1500 if quick else 15000)
    row_bytes = 4 * layers * (heads + neurons) + 8
    notes = []
    directory = Path(tempfile.mkdtemp(prefix="eb-detector-", dir=where))
    free = shutil.disk_usage(directory).free
    if wanted * row_bytes > free - 2e9:  # keep 2 GB for everyone else
        scaled = max(1000, int((free - 2e9) // row_bytes))
        notes.append(f"scaled down from {wanted} to {scaled} steps: {free / 1e9:.1f} GB free under {directory.parent}")
        wanted = scaled
    params = {}
    if quick:  # parameters scaled to the short run
        params = {m: {"smooth": 20, "window": 30, "every": 10} for m in ("slope", "mk", "adf")}
    info = {"steps": wanted, "layers": layers, "heads": heads, "neurons": neurons, "bytes": wanted * row_bytes,
            "where": str(directory.parent)}
    rows = []
    try:
        info["write_s"] = write_records(directory / "records", wanted, layers, heads, neurons)
        for block in () if cli_only else ("msa", "mlp"):
            rows += in_subprocess({"records": str(directory / "records"), "params": params, "block": block})
            print(f"[detector_cost] scans of {block} done", file=sys.stderr, flush=True)
        info["load"] = os.getloadavg()
        info["cli"] = cli_rows(directory / "records", params, baselines, rounds)
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return rows, notes, info


# --------------------------------------------------------------------------- report


def mb(n: float) -> str:
    return f"{n / 1e6:.0f} MB"


def render(check_rows, scan_rows_, notes, info, quick) -> str:
    big, small = ("300", "30") if quick else ("3000", "300")
    lines = [
        f"Detector cost: numpy {np.__version__}, masks at ratio {RATIO}, layerwise; synthetic coefficients "
        "(earlybird.synthetic's model: linear to a plateau + noise).",
        "",
        "Per check (median):",
        "",
        "| method | parameters | block | cost | samples |",
        "|---|---|---|---:|---:|",
    ]
    for r in check_rows:
        lines.append(f"| {r['method']} | {r['params']} | {r['block']} | {r['per']} | {r['n']} |")
    scan_params = "smooth 20, window 30, every 10 (scaled to the quick run)" if quick else "defaults"
    lines += [
        "",
        f"Full offline scan of {info['steps']} steps, msa {info['layers']}x{info['heads']} + mlp "
        f"{info['layers']}x{info['neurons']} float32 ({info['bytes'] / 1e9:.2f} GB written with CoefficientRecorder, fsync off, in "
        f"{info['write_s']:.0f} s, under {info['where']}); detectors at their {scan_params}, `stop_at_draw=False`, "
        "one subprocess per block (load, then each scan in turn; peak RSS is the process's so far):",
        "",
        "| block | scan | wall (s) | CPU (s) | checks | draw step | peak RSS (incl. mapped records) | peak anonymous memory (growth) |",
        "|---|---|---:|---:|---:|---|---:|---:|",
    ]
    for r in scan_rows_:
        draws = r.get("draws") or {}
        draw = ", ".join(f"{m} {s}" for m, s in draws.items()) if draws else "-"
        what = {"load": "load_records (both blocks)"}.get(r["what"], r["what"])
        memory = f"{mb(r['peak_anon'])} (+{mb(r['peak_anon'] - r['base_anon'])})"
        lines.append(f"| {r['block']} | {what} | {r['seconds']:.2f} | {r['cpu']:.2f} | {r.get('checks', '-')} | {draw} | "
                     f"{mb(r['peak_rss'])} | {memory} |")
    per = {(r["block"], r["what"]): r["seconds"] for r in scan_rows_}
    load = per[("msa", "load")]
    separate = {b: sum(per[(b, m)] for m in METHODS) for b in ("msa", "mlp")}
    single = {b: per[(b, "one pass")] for b in ("msa", "mlp")}
    cpu = {(r["block"], r["what"]): r["cpu"] for r in scan_rows_}
    single_cpu = cpu[("msa", "load")] + cpu[("msa", "one pass")] + cpu[("mlp", "one pass")]
    slow = max((r["ms"], f"{r['method']} ({r['block']})") for r in check_rows
               if "ms" in r and (r["window"] == int(small) or (r["method"] == "hamming" and r["window"] == 5)))
    lines += [
        "",
        f"- Check goal (<= 20 ms at window {small}): slowest {slow[1]} at {slow[0]:.3g} ms; "
        f"{'met' if slow[0] <= 20 else 'not met'}.",
        f"- Full-scan goal (all four methods <= 10 s): four separate `detect` calls take {separate['msa']:.1f} s (msa) "
        f"+ {separate['mlp']:.1f} s (mlp) = {separate['msa'] + separate['mlp']:.1f} s; one shared-mask pass takes "
        f"{single['msa']:.1f} s + {single['mlp']:.1f} s = {single['msa'] + single['mlp']:.1f} s, plus {load:.1f} s to "
        f"load ({'met' if load + single['msa'] + single['mlp'] <= 10 else 'not met'} with one pass per block; "
        f"{'met' if load + separate['msa'] + separate['mlp'] <= 10 else 'not met'} with separate calls); "
        f"in CPU time, load + one pass per block = {single_cpu:.1f} s.",
    ]
    lines += cli_lines(info["cli"])
    lines += [
        *[f"- Note: {n}" for n in notes],
    ]
    return "\n".join(lines)


def render_cli(notes, info) -> str:
    """The report of `--cli-only`: the records scanned, then the CLI table and its goal line."""
    lines = [f"Detector CLI scan: numpy {np.__version__}, masks at ratio {RATIO}, layerwise; {info['steps']} steps of "
             f"synthetic coefficients (earlybird.synthetic's model), msa {info['layers']}x{info['heads']} + mlp "
             f"{info['layers']}x{info['neurons']} float32 ({info['bytes'] / 1e9:.2f} GB written with "
             f"CoefficientRecorder, fsync off, in {info['write_s']:.0f} s, under {info['where']}); load average "
             f"{info['load'][0]:.1f} before the CLI scans, {os.getloadavg()[0]:.1f} after."]
    return "\n".join(lines + cli_lines(info["cli"]) + [f"- Note: {n}" for n in notes])


def cli_lines(rows: list[dict]) -> list[str]:
    """The CLI table (each run) and the goal line: this tree against the baseline, side by side, same output."""
    command = f"`earlybird detect RECORDS --method {','.join(CLI_METHODS)} --full-trace --json`"
    lines = ["", f"Through the CLI, as a user runs it: {command}, each process fresh (imports, loading and the JSON "
             "printing included); runs alternate between the variants:", "",
             "| variant | processes | round | wall (s) | CPU (s) | load average before |", "|---|---|---:|---:|---:|---:|"]
    for r in rows:
        processes = " + ".join(f"`--block {b}`" for b in r["blocks"])
        lines.append(f"| {r['variant']} | {processes} | {r['round'] + 1} | {r['seconds']:.2f} | {r['cpu']:.2f} | "
                     f"{r.get('load', float('nan')):.1f} |")
    median = {v: statistics.median(r["seconds"] for r in rows if r["variant"] == v) for v in {r["variant"] for r in rows}}
    cpu = {v: statistics.median(r["cpu"] for r in rows if r["variant"] == v) for v in median}
    ours = median["this tree"]
    text = (f"- Through the CLI (goal <= 5 s for all four on both blocks): {ours:.1f} s of wall time (median, "
            f"`--block both`; CPU {cpu['this tree']:.1f} s) ({'met' if ours <= 5 else 'not met'})")
    same = all(r["lines"] == rows[0]["lines"] for r in rows)
    others = [v for v in dict.fromkeys(r["variant"] for r in rows) if v != "this tree"]
    if others:
        text += "; " + "; ".join(
            f"{v} ({' + '.join(f'`--block {b}`' for b in next(r['blocks'] for r in rows if r['variant'] == v))}) "
            f"{median[v]:.1f} s (CPU {cpu[v]:.1f} s): {median[v] / ours:.2f}x wall, {cpu[v] / cpu['this tree']:.2f}x CPU"
            for v in others)
        text += f"; detection JSON {'identical' if same else 'DIFFERENT'} in every run."
    return lines + ["", text]


def main(argv=None) -> int:
    parser = make_parser(__doc__, "small records and windows, a pass of seconds", threads=False)
    parser.add_argument("--steps", type=int, default=None, help="steps of the scanned records (default 15000)")
    parser.add_argument("--dir", default=None, help="where to write the temporary records (default: the system tmp)")
    parser.add_argument("--baseline", metavar="[LABEL=]SRC", action="append", default=[],
                        help="a directory holding an earlier earlybird/ package (e.g. `git archive COMMIT earlybird | "
                             "tar -x -C SRC`): its CLI scan is timed beside this tree's, alternating, and the outputs "
                             "compared; repeat it for several")
    parser.add_argument("--rounds", type=int, default=None, help="CLI scans per variant (default 3; quick: 1)")
    parser.add_argument("--cli-only", action="store_true",
                        help="only the CLI scans (no per-check timings, no per-method scans in subprocesses)")
    parser.add_argument("--mask-cost", metavar="RECORDS", default=None,
                        help="only time compute_mask of the mlp block of RECORDS, this tree against each --baseline")
    parser.add_argument("--scan", help=argparse.SUPPRESS)  # internal: one scan, print JSON
    args = parser.parse_args(argv)
    if args.scan:
        print(json.dumps(scan(json.loads(args.scan))))
        return 0
    if args.mask_cost:
        return emit(render_mask_cost(mask_cost_rows(args.mask_cost, args.baseline, args.rounds or 3), args.mask_cost),
                    args)
    check_rows = [] if args.cli_only else per_check_rows(args.quick)
    print("[detector_cost] per-check timings done", file=sys.stderr, flush=True)
    rows, notes, info = scan_rows(args.quick, args.steps, args.dir, args.baseline,
                                  args.rounds or (1 if args.quick else 3), args.cli_only)
    if args.cli_only:
        return emit(render_cli(notes, info), args)
    return emit(render(check_rows, rows, notes, info, args.quick), args)


if __name__ == "__main__":
    sys.exit(main())
