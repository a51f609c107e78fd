"""The whole study in one command, on the embedded default (scikit-learn's digits, the small ViT), offline, on a CPU.

1. one slimming run (MSA and MLP slimming) recording the coefficients, and a dense run beside it;
2. every detector on its records: the Hamming grid and slope / MK / ADF with the study's parameters scaled to the
   run's length (the scaling is printed);
3. tickets pruned at fixed fractions of training (0, 4, 7, 20, 44, 80% of the steps) for ratios 30% and 80%, each
   retrained with the same budget; tickets at each detector's draw step; a random-pruning baseline per ratio; and an
   EB-Train run;
4. `report.md` with PNG figures (`earlybird.report`) in one output directory.

`--profile` names the detection profile (`earlybird.profiles`: `paper` by default, or `original`) of the detectors'
draws, of EB-Train (`--eb-profile`) and of the report, and is recorded in `draws.json`. The tickets are pruned by the
training entry point from the records (`--records --prune-step`), with the default profile's masks.

Runs go to a small pool of worker processes (one thread each) that import the entry point once and call its
`main(argv)` in-process: on a 2-core laptop that is what keeps the whole study within minutes. Each run's own output
goes to `logs/<run>.log`; the terminal shows a progress bar and one line per finished run.

    python -m earlybird.reproduce --entry ViT_pretraining/main.py [--out DIR] [--smoke] [--workers 2] -- --dataset digits
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

from .detectors import detect_many, scaled_params
from .errors import EarlyBirdError
from .fileio import write_json_atomic
from .layout import STUDY_DRAWS, STUDY_JOBS, STUDY_LOGS, STUDY_RUNS, RunLayout
from .profiles import DEFAULT_PROFILE, PROFILES, get_profile
from .records import load_records
from .report import build_report, study_stationarity
from .training.args import first_paragraph

FRACTIONS = (0.0, 0.04, 0.07, 0.20, 0.44, 0.80)  # of the training steps, as in the study's table
RATIOS = (0.3, 0.8)
L1 = 1e-4  # L1 strength on both coefficient kinds
DETECTOR_BLOCK = "msa"  # the study draws from the attention masks
RANDOM_SEED = 0
SMOKE_STEPS = 40

_entry_main = None


def _worker_init(entry: str, threads: int):
    global _entry_main
    import torch

    torch.set_num_threads(threads)
    from .training.entrypoints import load_entry_point

    _entry_main = load_entry_point(entry).main


def _run_one(job: tuple[str, list[str], str]) -> tuple[str, int, float]:
    """Run one entry-point invocation with its output in its own log file (the terminal keeps a progress bar)."""
    name, argv, log_path = job
    start = time.perf_counter()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "w") as log_file:
        os.dup2(log_file.fileno(), 1)
        os.dup2(log_file.fileno(), 2)
        try:
            status = _entry_main(argv)
        except BaseException as err:  # noqa: BLE001 - reported as the run's failure, with its log
            print(f"{type(err).__name__}: {err}", file=sys.stderr)
            status = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
    return name, status, time.perf_counter() - start


def _code_version() -> str:
    """What made the runs: earlybird's version and, in a git checkout, its commit (a change of either recomputes)."""
    import subprocess

    from . import __version__

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parents[1],
                                capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return f"{__version__} {commit}".strip()


class Jobs:
    """The study's finished runs (jobs.json: name -> the command it ran with and the code that ran it).

    A job whose run finished with the same command and code is reused; anything else is run again from scratch
    (`--overwrite-output-dir`), and `force` recomputes everything. Written after each finished run, atomically, so
    a killed study resumes where it stopped.
    """

    def __init__(self, out: Path, force: bool, log):
        self.path = out / STUDY_JOBS
        self.version = _code_version()
        self.log = log
        self.done = {} if force or not self.path.exists() else json.loads(self.path.read_text())

    def reusable(self, name: str, argv: list[str], run: Path) -> bool:
        entry = self.done.get(name)
        return (entry is not None and entry == {"argv": argv, "code": self.version}
                and RunLayout(run).results.is_file())

    def finished(self, name: str, argv: list[str]) -> None:
        self.done[name] = {"argv": argv, "code": self.version}
        write_json_atomic(self.done, self.path)


def run_jobs(pool, jobs: dict[str, list[str]], logs: Path, log, finished: Jobs) -> None:
    """Run named argv lists on the pool (reusing finished ones); stop at the first failure, showing its log's end."""
    from tqdm.auto import tqdm

    runs = logs.parent / STUDY_RUNS
    work, reused = [], []
    for name, argv in jobs.items():
        if finished.reusable(name, argv, runs / name):
            reused.append(name)
            continue
        redo = ["--overwrite-output-dir"] if (runs / name).exists() else []
        work.append((name, argv + redo, str(logs / f"{name}.log")))
    if reused:
        log(f"  reused {len(reused)} finished run(s) made with the same command and code: {', '.join(reused)} "
            "(--force recomputes them)")
    with tqdm(total=len(work), desc="runs", unit="run", leave=False) as bar:
        for name, status, seconds in pool.imap_unordered(_run_one, work):
            bar.update()
            if status != 0:
                tail = (logs / f"{name}.log").read_text().strip().splitlines()[-5:]
                raise EarlyBirdError(f"reproduce: run {name!r} failed (status {status}); its log "
                                     f"{logs / (name + '.log')} ends with: " + " | ".join(tail))
            finished.finished(name, jobs[name])
            bar.write(f"  {name:22s} {seconds:5.1f}s  {_read_result(runs / name)}")


def _read_result(run: Path) -> str:
    try:
        results = json.loads(RunLayout(run).results.read_text())
    except (OSError, ValueError):
        return ""
    return f"test accuracy {results['accuracy']:.3f}" if "accuracy" in results else ""


def common_flags(steps: int | None, seed: int) -> list[str]:
    flags = ["--seed", str(seed), "--disable-tqdm", "--logging-steps", "1000000"]
    return flags + (["--max-steps", str(steps)] if steps else [])


def slimming_flags() -> list[str]:
    return ["--self-slimming", "--inter-slimming", "--l1-self", str(L1), "--l1-inter", str(L1)]


def ticket_flags(records: Path, step: int, ratio: float) -> list[str]:
    return ["--records", str(records), "--prune-step", str(step), "--self-pruning-ratio", str(ratio),
            "--inter-pruning-ratio", str(ratio), "--rewind", "init"]


def eb_flags(method: str, total: int, profile: str = DEFAULT_PROFILE) -> list[str]:
    """EB-Train's detector flags for the study's parameters scaled to a run of `total` steps, under `profile`."""
    scaled = scaled_params(method, total, profile=profile, block=DETECTOR_BLOCK)[0]
    return ["--eb-profile", profile] + [item for name, value in scaled.items()
                                        for item in (f"--eb-{name.replace('_', '-')}", str(value))]


def write_draws(path: Path, draws: dict, profile: str, params: dict, factor: float, total: int, fixed: dict,
                slim: dict) -> None:
    """Write the draws of `profile` into the study's draws.json, keeping those of the other profiles when they were
    made on the same slimming run (same command and code: `slim`, its jobs.json entry) and fixed steps.

    Keys: 'method@ratio' under the default profile, 'profile:method@ratio' under another (earlybird.study reads
    both); the stationarity parameters and the original code's draw indices the same way.
    """
    prefix = "" if profile == DEFAULT_PROFILE else f"{profile}:"
    try:
        kept = json.loads(path.read_text())
    except (OSError, ValueError):
        kept = {}
    if not isinstance(kept, dict) or (kept.get("slim"), kept.get("total_steps"), kept.get("fixed")) != (slim, total,
                                                                                                       fixed):
        kept = {}  # another slimming run's draws (or none): nothing to keep

    def mine(key: str) -> bool:  # a key of this profile
        return key.startswith(prefix) if prefix else ":" not in key

    def another_profiles(key: str) -> bool:  # its draws and parameters are kept
        return ("@" in key or key.endswith("stationarity_params")) and not mine(key)

    indices = {k: v for k, v in kept.get("draw_indices", {}).items() if not mine(k)}
    indices |= {f"{prefix}{m}@{r}": result.draw_index for (m, r), result in draws.items() if result.indexed}
    profiles = sorted(set(kept.get("profiles", [])) | {profile}, key=lambda p: (p != DEFAULT_PROFILE, p))
    kept = {k: v for k, v in kept.items() if another_profiles(k)}
    write_json_atomic(kept | {f"{prefix}{m}@{r}": result.draw_step for (m, r), result in draws.items()}
                      | {f"{prefix}stationarity_params": params, "scale": factor, "total_steps": total,
                         "fixed": fixed, "profiles": profiles, "slim": slim}
                      | ({"draw_indices": indices} if indices else {}), path)


def fixed_steps(records, total: int, fractions=FRACTIONS) -> dict:
    """{fraction: the pruning step at that fraction of training} (at least the first recorded step)."""
    first = int(records.steps[0])
    return {fraction: max(first, int(round(fraction * total))) for fraction in fractions}


def plan_tickets(records, total: int, fractions=FRACTIONS, profile: str = DEFAULT_PROFILE) -> tuple[dict, dict]:
    """(step, ratio) of every ticket: fixed fractions and detector draws; and the detector draws themselves
    ({(method, ratio): DetectionResult}) under `profile`."""
    tickets = {}
    for fraction, step in fixed_steps(records, total, fractions).items():
        for ratio in RATIOS:
            tickets[(step, ratio)] = f"fraction {fraction:.0%}"
    draws = {}
    detectors = get_profile(profile).detectors
    params = {method: scaled_params(method, total, profile=profile, block=DETECTOR_BLOCK)[0] for method in detectors}
    for ratio in RATIOS:
        for method, result in detect_many(records, DETECTOR_BLOCK, ratio, None, params, profile=profile).items():
            draws[(method, ratio)] = result
    for (method, ratio), result in draws.items():
        if result.draw_step is not None:
            tickets.setdefault((result.draw_step, ratio), f"{method} draw")
    return tickets, draws


def reproduce(entry: str, out: Path, data_flags: list[str], *, smoke: bool = False, steps: int | None = None,
              workers: int = 2, seed: int = 42, fractions=FRACTIONS, random_baseline: bool = True,
              ebtrain: bool = True, force: bool = False, profile: str = DEFAULT_PROFILE, log=print) -> Path:
    """Run the study with `entry` (an entry point's path) and `data_flags` (its model / data flags) into `out`,
    detecting under the detection profile `profile`."""
    profile = get_profile(profile).name
    start = time.perf_counter()
    if not Path(entry).is_file():
        raise EarlyBirdError(f"--entry {entry}: no such entry point (expected ViT_pretraining/main.py)")
    runs, logs = out / STUDY_RUNS, out / STUDY_LOGS
    runs.mkdir(parents=True, exist_ok=True)
    logs.mkdir(exist_ok=True)
    finished = Jobs(out, force, log)
    steps = SMOKE_STEPS if smoke else steps  # None: the entry point's own budget
    base = [*data_flags, *common_flags(steps, seed)]
    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 2) // workers)
    log(f"reproduce: {'smoke test, ' if smoke else ''}{workers} workers x {threads} thread(s), output {out}")
    with context.Pool(workers, initializer=_worker_init, initargs=(entry, threads)) as pool:
        log("1/4 slimming run and dense reference")
        slim, dense = runs / "slim", runs / "dense"
        run_jobs(pool, {"slim": [*base, "--output-dir", str(slim), *slimming_flags()],
                        "dense": [*base, "--output-dir", str(dense)]}, logs, log, finished)
        records = load_records(RunLayout(slim).records)
        total = int(records.steps[-1])
        params, _, _, factor = study_stationarity(total, profile=profile, block=DETECTOR_BLOCK)
        log(f"2/4 detectors on {total} steps{'' if profile == DEFAULT_PROFILE else f', profile {profile}'}: "
            f"stationarity smooth/window/every = {params['smooth']}/{params['window']}/"
            f"{params['every']} (the study's 200/300/100 x {factor:.4f} = {total}/14774 steps, with floors)")
        tickets, draws = plan_tickets(records, total, fractions, profile)
        for (method, ratio), result in draws.items():
            log(f"  {method:8s} ratio {ratio:.0%}: draw step {result.draw_step}"
                + (f" (the original code's number {result.draw_index})" if result.draw_index is not None else ""))
        write_draws(out / STUDY_DRAWS, draws, profile, params, factor, total,
                    {str(f): s for f, s in fixed_steps(records, total, fractions).items()}, finished.done["slim"])
        log(f"3/4 {len(tickets)} tickets" + (f", {len(RATIOS)} random baselines" if random_baseline else "")
            + (" and EB-Train" if ebtrain else ""))
        jobs = {}
        for (step, ratio), why in sorted(tickets.items()):
            jobs[f"ticket-s{step}-r{int(ratio * 100)}"] = [
                *base, "--output-dir", str(runs / f"ticket-s{step}-r{int(ratio * 100)}"),
                *ticket_flags(RunLayout(slim).records, step, ratio)]
        middle = max(int(records.steps[0]), int(round(0.2 * total)))
        for ratio in RATIOS if random_baseline else ():
            name = f"random-s{middle}-r{int(ratio * 100)}"
            jobs[name] = [*base, "--output-dir", str(runs / name), *ticket_flags(RunLayout(slim).records, middle, ratio),
                          "--random-prune", str(RANDOM_SEED)]
        if ebtrain:  # one EB-Train run per profile (the default profile's keeps its name)
            name = "ebtrain-slope" if profile == DEFAULT_PROFILE else f"ebtrain-slope-{profile}"
            jobs[name] = [
                *base, "--output-dir", str(runs / name), *slimming_flags(), "--eb-method", "slope",
                "--eb-block", DETECTOR_BLOCK, *eb_flags("slope", total, profile), "--self-pruning-ratio", str(RATIOS[0]),
                "--inter-pruning-ratio", str(RATIOS[0])]
        run_jobs(pool, jobs, logs, log, finished)
        pool.close()
        pool.join()
    log("4/4 report")
    # this study's runs only (the directory may hold runs of an earlier pass with other settings)
    report = build_report([slim, dense, *(runs / name for name in sorted(jobs))],
                          out if profile == DEFAULT_PROFILE else out / f"report-{profile}", profile=profile,
                          log=lambda line: log("  " + line))
    log(f"reproduce: done in {time.perf_counter() - start:.0f}s; report: {report}")
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="reproduce", description=first_paragraph(__doc__),
        epilog="Arguments after `--` go to every run (the model and data flags of the entry point).")
    parser.add_argument("--entry", default="ViT_pretraining/main.py", help="the entry point to run")
    parser.add_argument("--out", default="reproduce_out",
                        help="output directory; a second pass reuses the runs that finished with the same command and "
                             "code")
    parser.add_argument("--force", action="store_true", help="recompute every run, finished or not")
    parser.add_argument("--smoke", action="store_true", help=f"every run {SMOKE_STEPS} steps: a sub-minute check")
    parser.add_argument("--steps", type=int, help="training steps of every run (default: the entry point's)")
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS),
                        help="fixed pruning steps, as fractions of training")
    parser.add_argument("--no-random", action="store_true", help="skip the random-pruning baselines")
    parser.add_argument("--no-ebtrain", action="store_true", help="skip the EB-Train run")
    parser.add_argument("--workers", type=int, default=2, help="runs in parallel (default 2)")
    parser.add_argument("--seed", type=int, nargs="+", default=[42],
                        help="the seed of every run (default 42); several: one study per seed in OUT/seed-S and their "
                             "summary (mean ± sd) in OUT/summary.md")
    parser.add_argument("--profile", choices=tuple(PROFILES), default=DEFAULT_PROFILE,
                        help="detection profile of the draws, EB-Train and the report (default paper; see "
                             "docs/library.md)")
    parser.add_argument("data_flags", nargs=argparse.REMAINDER, help="-- then the entry point's model/data flags")
    args = parser.parse_args(argv)
    data_flags = args.data_flags[1:] if args.data_flags[:1] == ["--"] else args.data_flags
    out = Path(args.out)
    try:
        if len(set(args.seed)) != len(args.seed):
            raise EarlyBirdError(f"--seed {' '.join(map(str, args.seed))}: each seed once")
        studies = [out / f"seed-{seed}" for seed in args.seed] if len(args.seed) > 1 else [out]
        for seed, study in zip(args.seed, studies):
            reproduce(args.entry, study, data_flags, smoke=args.smoke, steps=args.steps,
                      workers=max(1, args.workers), seed=seed, fractions=tuple(args.fractions),
                      random_baseline=not args.no_random, ebtrain=not args.no_ebtrain, force=args.force, profile=args.profile)
        if len(studies) > 1:
            from .study import summarize

            summarize(studies, out)
    except EarlyBirdError as err:
        print(f"reproduce: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
