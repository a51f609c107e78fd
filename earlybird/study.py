"""Evidence over seeds: the same study (`earlybird.reproduce`) run with several seeds, summarised as mean ± sd.

    earlybird study OUT/seed-1 OUT/seed-2 OUT/seed-3 -o OUT     # writes OUT/summary.md and a figure

Each seed's study directory holds its runs (`runs/`), the detectors' draws and the fixed pruning steps
(`draws.json`). For every pruning step (as a fraction of training) and ratio, the summary gives the tickets' accuracy
over seeds; for every detector (and detection profile) and ratio: where it drew (% of training), the accuracy of the
ticket drawn there, its regret against the best fixed-fraction ticket of the same seed and ratio, and the training
FLOPs spent until the draw (the slimming run's FLOPs per step x the draw step). Every number comes from the files.
"""

from __future__ import annotations

import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from .errors import EarlyBirdError
from .fileio import write_text_atomic
from .layout import STUDY_DRAWS, STUDY_RUNS, read_run

SUMMARY = "summary.md"
FIGURE = "study_accuracy.png"


@dataclass
class Seed:
    """One seed's study: its tickets' accuracy by (step, ratio), its draws, its fixed pruning steps, dense, FLOPs."""

    path: Path
    total: int
    fixed: dict  # fraction -> step
    draws: dict  # (profile, method, ratio) -> step or None
    tickets: dict = field(default_factory=dict)  # (step, ratio) -> accuracy
    random: dict = field(default_factory=dict)  # ratio -> accuracy
    dense: float | None = None
    flops_per_step: float | None = None
    metric: str = "accuracy"


def _draw_key(key: str) -> tuple[str, str, float] | None:
    """'method@ratio' (the paper profile) or 'profile:method@ratio' -> (profile, method, ratio)."""
    if "@" not in key:
        return None
    name, ratio = key.rsplit("@", 1)
    profile, _, method = name.rpartition(":")
    return profile or "paper", method, float(ratio)


def load_seed(path) -> Seed:
    path = Path(path)
    try:
        draws = json.loads((path / STUDY_DRAWS).read_text())
    except (OSError, ValueError) as err:
        raise EarlyBirdError(f"{path / STUDY_DRAWS}: not a study's draws ({err}); expected a reproduce output "
                             "directory") from None
    if "fixed" not in draws or "total_steps" not in draws:
        raise EarlyBirdError(f"{path / STUDY_DRAWS}: made before studies recorded their fixed steps; re-run it")
    seed = Seed(path, int(draws["total_steps"]), {float(f): int(s) for f, s in draws["fixed"].items()},
                {k: v for k, v in ((_draw_key(key), step) for key, step in draws.items()) if k is not None})
    for run_dir in sorted((path / STUDY_RUNS).iterdir()):
        run = read_run(run_dir)
        metric, value = run.metric
        if value is None:
            continue
        seed.metric = metric
        ratio = run.ratios[0]
        if run.kind == "ticket":
            seed.tickets[(run.prune_step, ratio)] = value
        elif run.kind == "random":
            seed.random[ratio] = value
        elif run.kind == "dense":
            seed.dense = value
        elif run.kind == "slim" and run.results.get("train_flops") and run.results.get("step"):
            seed.flops_per_step = run.results["train_flops"] / run.results["step"]
    return seed


def _mean_sd(values, scale: float = 100.0, digits: int = 1) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def _table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def detector_rows(seeds: list[Seed]) -> list[dict]:
    """Per (profile, method, ratio): per seed the draw step, its ticket's accuracy, the regret, the FLOPs to the draw."""
    keys = sorted({k for s in seeds for k in s.draws}, key=lambda k: (k[0] != "paper", k[0], k[2], k[1]))
    rows = []
    for profile, method, ratio in keys:
        per_seed = []
        for s in seeds:
            step = s.draws.get((profile, method, ratio))
            fixed = [s.tickets.get((fixed_step, ratio)) for fixed_step in s.fixed.values()]
            fixed = [a for a in fixed if a is not None]
            accuracy = None if step is None else s.tickets.get((step, ratio))
            per_seed.append({
                "step": step, "fraction": None if step is None else step / s.total, "accuracy": accuracy,
                "regret": None if accuracy is None or not fixed else max(fixed) - accuracy,
                "flops": None if step is None or s.flops_per_step is None else s.flops_per_step * step})
        rows.append({"profile": profile, "method": method, "ratio": ratio, "seeds": per_seed})
    return rows


def summarize(seed_dirs, out_dir, log=print) -> Path:
    """Write summary.md (and its figure) for the seeds' studies."""
    seeds = [load_seed(p) for p in seed_dirs]
    if not seeds:
        raise EarlyBirdError("give at least one seed's study directory")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    metric = seeds[0].metric
    ratios = sorted({r for s in seeds for _, r in s.tickets})
    fractions = sorted({f for s in seeds for f in s.fixed})
    n = len(seeds)
    md = [f"# Early-bird study over {n} seeds", "",
          f"Seeds: {', '.join(f'`{s.path}`' for s in seeds)}; {seeds[0].total} training steps each. "
          f"Values are mean ± sd over the seeds of the test {metric} (%); a ticket is retrained from the initial "
          "weights with the same budget.", ""]
    # Tickets at fixed fractions
    rows = []
    for fraction in fractions:
        rows.append([f"{fraction:.0%}"] + [_mean_sd([s.tickets.get((s.fixed.get(fraction), r)) for s in seeds])
                                            for r in ratios])
    rows.append(["dense"] + [_mean_sd([s.dense for s in seeds])] * len(ratios))
    if any(s.random for s in seeds):
        rows.append(["random pruning (20%)"] + [_mean_sd([s.random.get(r) for s in seeds]) for r in ratios])
    md += ["## Tickets by pruning step", "", f"![]({FIGURE})", "",
           _table(["pruning step (% of training)"] + [f"{r:.0%} pruned" for r in ratios], rows), ""]
    # Detectors
    detectors = detector_rows(seeds)
    rows = []
    for d in detectors:
        drew = [x for x in d["seeds"] if x["step"] is not None]
        flops = [x["flops"] for x in drew if x["flops"] is not None]
        rows.append([d["profile"], d["method"], f"{d['ratio']:.0%}", f"{len(drew)}/{n}",
                     _mean_sd([x["fraction"] for x in drew]),
                     ", ".join("—" if x["step"] is None else str(x["step"]) for x in d["seeds"]),
                     _mean_sd([x["accuracy"] for x in d["seeds"]]), _mean_sd([x["regret"] for x in d["seeds"]]),
                     "—" if not flops else f"{statistics.fmean(flops):.3g}"])
    md += ["## Detectors", "",
           "Regret: the best fixed-fraction ticket's accuracy minus the accuracy of the ticket at the draw, per seed "
           "and ratio (points; lower is better, negative beats every fixed fraction). FLOPs: training FLOPs until the "
           "draw (encoder, from the shapes).", "",
           _table(["profile", "detector", "ratio", "drew", "draw (% of training)", "draw steps per seed",
                   f"ticket {metric}", "regret (points)", "FLOPs until the draw"], rows), ""]
    figure = plot_study(seeds, detectors, ratios, out_dir / FIGURE)
    summary = out_dir / SUMMARY
    write_text_atomic("\n".join(md) + "\n", summary)
    log(f"study: {summary} (and {figure.name})")
    return summary


def plot_study(seeds: list[Seed], detectors: list[dict], ratios, out: Path) -> Path:
    """Ticket accuracy against the pruning step (mean ± sd over seeds) per ratio, the dense band, and each
    detector's draws (mean fraction ± sd, at the mean accuracy of its tickets)."""
    from .report import _pyplot, _save, detector_styles

    plt = _pyplot()
    fig, axes = plt.subplots(1, len(ratios), figsize=(max(7.5, 5.6 * len(ratios)), 4.6), squeeze=False, sharey=True)
    dense = [s.dense for s in seeds if s.dense is not None]
    # The report's styles: a colour (and marker) per detector, the data in black and grey -- so the dense line can
    # never share a detector's colour; a profile's variant of a method is the method's colour with an open marker.
    styles = detector_styles()
    methods = sorted({(d["profile"], d["method"]) for d in detectors})
    profiles = sorted({profile for profile, _ in methods})
    for ax, ratio in zip(axes[0], ratios):
        fractions = sorted({f for s in seeds for f in s.fixed})
        means, sds = [], []
        for f in fractions:
            values = [s.tickets.get((s.fixed.get(f), ratio)) for s in seeds]
            values = [100 * v for v in values if v is not None]
            means.append(statistics.fmean(values) if values else math.nan)
            sds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
        ax.errorbar([100 * f for f in fractions], means, yerr=sds, color="black", marker="o", ms=4, capsize=3,
                    label="ticket at a fixed step")
        if dense:
            mean = 100 * statistics.fmean(dense)
            sd = 100 * statistics.stdev(dense) if len(dense) > 1 else 0.0
            ax.axhspan(mean - sd, mean + sd, color="0.5", alpha=0.15)
            ax.axhline(mean, color="0.35", ls=(0, (4, 2)), lw=1.2, label="dense (mean ± sd)")
        for profile, method in methods:
            row = next((d for d in detectors if (d["profile"], d["method"], d["ratio"]) == (profile, method, ratio)),
                       None)
            drew = [x for x in (row or {}).get("seeds", []) if x["fraction"] is not None and x["accuracy"] is not None]
            if not drew:
                continue
            xs = [100 * x["fraction"] for x in drew]
            ys = [100 * x["accuracy"] for x in drew]
            style = styles[method]
            ax.errorbar(statistics.fmean(xs), statistics.fmean(ys),
                        xerr=statistics.stdev(xs) if len(xs) > 1 else 0.0,
                        yerr=statistics.stdev(ys) if len(ys) > 1 else 0.0, fmt=style.marker, color=style.color,
                        mfc=style.color if profiles.index(profile) == 0 else "white", ms=7, capsize=3,
                        label=f"{method} ({profile})")
        ax.set_title(f"{ratio:.0%} of heads and neurons pruned")
        ax.set_xlabel("pruning step (% of training)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"test {seeds[0].metric} (%)")
    handles, labels = axes[0][-1].get_legend_handles_labels()
    columns = 3
    fig.legend(handles, labels, loc="lower center", ncol=columns, fontsize=8, frameon=False)
    fig.suptitle(f"Tickets over {len(seeds)} seeds: accuracy by pruning step, and where each detector drew",
                 fontsize=11)
    fig.tight_layout(rect=(0, 0.06 * math.ceil(len(labels) / columns), 1, 1))
    return _save(fig, out, {"figure": "study_accuracy", "methods": [f"{m} ({p})" for p, m in methods]})
