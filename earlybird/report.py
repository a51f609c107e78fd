"""The study's figures and tables for any slimming run (and the runs trained from it).

`build_report(run_dirs, out_dir)` reads a slimming run's records (ours or the original research layout) and, when
given, the ticket, dense and EB-Train run directories, and writes `report.md` with PNG figures:

- consecutive-mask Hamming distances for MSA and MLP at two ratios, and the table of Hamming draw steps (Figure 2);
- the coefficient trajectories of one layer's heads, and the nuclear norm of the masks with its moving average
  (Figure 3);
- ticket accuracy by pruning step x ratio with the dense reference (Figure 5's table);
- each stationarity test's p-value trace with its threshold and the draw step marked (Figures 6 and 9);
- a detector summary: draw step (absolute and % of training), the accuracy of the ticket drawn there, the compute
  spent until the draw, and EB-Train's total compute and accuracy against dense training.

Every number in the report is computed here from the files it names, under one detection profile
(`earlybird.profiles`, named in the report's header).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .blocks import BLOCKS
from .detectors import DETECTORS, STUDY_STEPS, detect_many, hamming_table, scaled_params, smooth_series, study_params
from .errors import EarlyBirdError
from .fileio import write_text_atomic
from .layout import REPORT, RUN_KINDS, Run, RunLayout, read_run, records_path
from .masks import compute_mask, hamming_distance, nuclear_norm
from .profiles import get_profile
from .records import Records, load_records

# The study's Figure 2 table: FIFO sizes x thresholds of the Hamming rule.
PAPER_HAMMING_GRID = {"cached": (5, 50, 100, 500, 2000), "thresholds": (0.1, 0.01)}


def _block_steps(records: Records, block: str, per_block: int = 1 << 23):
    coefs = records.block(block)
    per = max(1, per_block // int(np.prod(coefs.shape[1:])))
    for start in range(0, coefs.shape[0], per):
        yield start, coefs[start : start + per]


def mask_series(records: Records, block: str, ratio: float, scope: str | None = None,
                profile: str | None = None) -> dict:
    """Per recorded step: the mask's nuclear norm, and from the second step on the Hamming distance to the previous mask.

    Computed in blocks of steps so that BERT-base-sized records (12 x 3072 neurons, 15k steps) fit in memory. The
    masks are the profile's (its mask rule; `scope` None: its default scope for the block).
    """
    profile = get_profile(profile)
    scope = profile.scope(block, scope)
    distances, norms, previous = [], [], None
    for _, coefs in _block_steps(records, block):
        masks = compute_mask(coefs, ratio, scope, profile.mask_rule)
        chained = masks if previous is None else np.concatenate([previous[None], masks])
        distances.append(np.atleast_1d(hamming_distance(chained[1:], chained[:-1])))
        norms.append(np.atleast_1d(nuclear_norm(masks)))
        previous = masks[-1]
    return {"steps": np.asarray(records.steps), "distance": np.concatenate(distances),
            "norm": np.concatenate(norms)}


def _plots_p_values(method: str) -> bool:
    """Detectors of the smoothed nuclear norm report a p-value per check (Figures 6 and 9)."""
    return DETECTORS[method].uses_norm


# --------------------------------------------------------------------------- figures


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_hamming(series: dict, total_steps: int, out: Path) -> Path:
    """Figure 2 (a, b): consecutive-mask Hamming distance over steps; rows are blocks (MSA first), columns ratios."""
    plt = _pyplot()
    blocks = sorted({b for b, _ in series}, key=lambda b: b != "msa")
    ratios = sorted({r for _, r in series})
    fig, axes = plt.subplots(len(blocks), len(ratios), figsize=(5.0 * len(ratios), 3.2 * len(blocks)), squeeze=False)
    for row, block in enumerate(blocks):
        for col, ratio in enumerate(ratios):
            ax, s = axes[row][col], series[(block, ratio)]
            ax.plot(s["steps"][1:], s["distance"], lw=0.8, color="tab:blue")
            ax.set_title(f"{block.upper()}, pruning ratio {ratio:.0%}")
            ax.set_xlabel("training step")
            ax.set_ylabel("Hamming distance")
            ax.set_xlim(0, max(total_steps, 1))
    fig.suptitle("Normalised Hamming distance between consecutive pruning masks")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_coefficients(records: Records, layer: int, out: Path, block: str = "msa", max_panels: int = 12) -> Path:
    """Figure 3 (a): the coefficient trajectories of one layer's heads (or first neurons)."""
    plt = _pyplot()
    coefs = records.block(block)[:, layer, :max_panels]
    n = coefs.shape[1]
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    unit = BLOCKS[block].unit
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        ax.plot(records.steps, coefs[:, i], lw=0.8, color="black")
        ax.set_title(f"{unit} {i}", fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_ylabel("coefficient", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"Slimming coefficients, layer {layer} ({block.upper()})")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_nuclear_norm(series: dict, smooth: int, out: Path, title: str) -> Path:
    """Figure 3 (b): the nuclear norm of the masks with its moving average."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.plot(series["steps"], series["norm"], lw=0.8, color="tab:blue", label="nuclear norm of the masks")
    ax.plot(series["steps"], smooth_series(series["norm"], smooth), lw=1.6, color="black",
            label=f"moving average ({smooth} steps)")
    ax.set_xlabel("training step")
    ax.set_ylabel("nuclear norm")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_pvalues(results: dict, titles: dict, out: Path, title: str) -> Path:
    """Figures 6 / 9: each stationarity test's p-value trace, its threshold, and the steps where it passes."""
    plt = _pyplot()
    methods = [m for m in results if _plots_p_values(m)]
    fig, axes = plt.subplots(1, len(methods), figsize=(4.6 * len(methods), 3.6), squeeze=False)
    for ax, method in zip(axes[0], methods):
        result = results[method]
        trace = [e for e in result.trace if e.get("p_value") is not None]
        steps = [e["step"] for e in trace]
        ax.plot(steps, [e["p_value"] for e in trace], color="black", lw=1.0, label="p-value")
        ax.axhline(result.params["alpha"], color="red", ls="--", lw=1.0, label=f"threshold {result.params['alpha']}")
        passing = [e for e in trace if e["passed"]]
        ax.scatter([e["step"] for e in passing], [e["p_value"] for e in passing], s=12, color="red", zorder=3,
                   label="passes")
        if result.draw_step is not None:
            ax.axvline(result.draw_step, color="tab:green", lw=1.2, label=f"draw: step {result.draw_step}")
        ax.set_ylim(-0.03, 1.03)
        ax.set_xlabel("training step")
        ax.set_ylabel("p-value")
        ax.set_title(titles[method], fontsize=10)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------- tables


def _fmt_step(step) -> str:
    return "never" if step is None else str(int(step))


def _pct(part, whole) -> str:
    return "—" if part is None or not whole else f"{100.0 * part / whole:.1f}%"


def _fmt_metric(value) -> str:
    return "—" if value is None else f"{100.0 * value:.1f}"


def markdown_table(header: list, rows: list) -> str:
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def hamming_markdown(table: dict, ratios, cached, thresholds) -> str:
    header = ["cached masks"] + [f"ratio {r:.0%}, ε={t}" for r in ratios for t in thresholds]
    rows = [[n] + [_fmt_step(table[(float(r), int(n), float(t))]) for r in ratios for t in thresholds]
            for n in cached]
    return markdown_table(header, rows)


def _ratio_label(ratios: tuple[float, float]) -> str:
    s, i = ratios
    return f"{s:.0%}" if s == i else f"MSA {s:.0%} / MLP {i:.0%}"


def ticket_table(tickets: list[Run], total_steps: int, dense: Run | None) -> str:
    """Figure 5: ticket accuracy by pruning step (rows) and ratio (columns), dense reference below."""
    if not tickets:
        return "_No ticket runs were given._"
    metric = tickets[0].metric[0]
    ratios = sorted({t.ratios for t in tickets})
    steps = sorted({t.prune_step for t in tickets if t.prune_step is not None})
    cell = {(t.prune_step, t.ratios): t.metric[1] for t in tickets}
    rows = [[_pct(s, total_steps), s] + [_fmt_metric(cell.get((s, r))) for r in ratios] for s in steps]
    text = markdown_table(["% of steps", "pruning step"] + [_ratio_label(r) for r in ratios], rows)
    if dense is not None:
        text += f"\n\nDense reference: {metric} **{_fmt_metric(dense.metric[1])}** (`{dense.path.name}`)."
    return text


# --------------------------------------------------------------------------- the report


def _classify(runs: list[Run], log) -> dict:
    kinds = {kind: [] for kind in RUN_KINDS}
    for run in runs:
        if run.kind not in kinds:
            log(f"report: skipping {run.path}: its results.json names no run kind (an unfinished run, or one made "
                "before runs wrote their kind)")
            continue
        kinds[run.kind].append(run)
    return kinds


def _holds_records(path: Path) -> bool:
    """A slimming run directory, a records directory or a records file (not another kind of run)."""
    run = RunLayout(path)
    return run.records.is_dir() or path.suffix == ".npy" or (path.is_dir() and not run.is_run())


def study_stationarity(total_steps: int, scale: bool = True, profile: str | None = None,
                       block: str = "msa") -> tuple[dict, dict, dict, float]:
    """The stationarity detectors' step-counted parameters (the slope detector's, which all of them share) under
    `profile` for `block`: (scaled, the study's, the floors, the factor)."""
    spec = study_params("slope", profile, block)
    scaled, factor = scaled_params("slope", total_steps, scale, profile, block)
    return (scaled, {name: p.default for name, p in spec.items()}, {name: p.floor for name, p in spec.items()},
            factor)


def _profile_line(profile, scopes: dict) -> str:
    """The header's description of the detection profile and the masks."""
    named = set(scopes.values())
    where = (f"`{named.pop()}`" if len(named) == 1 else
             ", ".join(f"{block.upper()} `{scope}`" for block, scope in scopes.items()))
    text = (f"Detection profile: `{profile.name}` ({profile.summary}; docs/library.md gives each rule). "
            f"Masks: {where}, importance {profile.importance}.")
    if profile.reports_index:
        text += " Draw steps are training steps; the original code's own numbers are in the detector summary."
    return text


def build_report(run_dirs, out_dir=None, *, ratios=(0.3, 0.8), scope: str | None = None, layer: int = 0,
                 scale: bool = True, hamming_grid: dict | None = None, profile: str | None = None, log=print) -> Path:
    """Write `report.md` and its figures for the slimming run (first path with records) and the other runs, under
    the detection profile `profile` (default `paper`; `scope` None: the profile's default scope per block)."""
    profile = get_profile(profile)
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise EarlyBirdError("report: give at least one run directory (or records path)")
    records, slim_run, others = None, None, []
    for path in run_dirs:
        if records is None and _holds_records(path):
            records = load_records(records_path(path))
            slim_run = read_run(path) if RunLayout(path).is_run() else None
        else:
            others.append(read_run(path))
    if records is None:
        raise EarlyBirdError(f"report: none of {', '.join(map(str, run_dirs))} holds coefficient records")
    out_dir = Path(out_dir) if out_dir else (run_dirs[0] if run_dirs[0].is_dir() else run_dirs[0].parent) / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = {**PAPER_HAMMING_GRID, **(hamming_grid or {})}
    ratios = tuple(float(r) for r in ratios)
    total = int(records.steps[-1])  # step S is the state after S optimizer updates
    scopes = {block: profile.scope(block, scope) for block in records.blocks}
    stationarity, study, floors, factor = study_stationarity(total, scale, profile.name)
    log(f"report: {records.total_steps} recorded steps (last step {total}) from {records.path}")
    log(f"report: stationarity parameters {stationarity} (the study's {study} x {factor:.4f}, "
        f"run length {total} / {STUDY_STEPS} steps)" if factor < 1 else
        f"report: stationarity parameters {stationarity} (the study's)")
    kinds = _classify(others, log)
    dense = kinds["dense"][0] if kinds["dense"] else None
    md = [f"# Early-bird report: `{records.path}`", ""]
    md.append(f"Records: {records.total_steps} steps (steps {int(records.steps[0])}..{int(records.steps[-1])}), "
              f"blocks {', '.join(records.blocks)}, {records.layers} layers"
              + (f", model `{records.meta.get('model_type')}`" if records.meta.get("model_type") else "") + ".")
    # a block whose smoothing differs from the MSA's (the original profile's FFN series: not smoothed)
    smooths = {block: study_stationarity(total, scale, profile.name, block)[0]["smooth"] for block in records.blocks}
    smoothing = "".join(f" {block.upper()}: " + (f"smooth {value}." if value else "not smoothed.")
                        for block, value in smooths.items() if value != stationarity["smooth"])
    md.append(_profile_line(profile, scopes) + f" Stationarity tests: smooth {stationarity['smooth']}, "
              f"window {stationarity['window']}, check every {stationarity['every']} steps"
              + (f" — the study's {' / '.join(map(str, study.values()))} scaled by {factor:.4f} = {total} / "
                 f"{STUDY_STEPS} steps (floors {floors})." if factor < 1 else " (the study's values).")
              + smoothing)
    md.append("")

    # Figure 2
    series = {(b, r): mask_series(records, b, r, scopes[b], profile.name) for b in records.blocks for r in ratios}
    fig = plot_hamming(series, total, out_dir / "hamming_distances.png")
    md += ["## Hamming distances between consecutive masks (Figure 2)", "", f"![]({fig.name})", ""]
    for block in records.blocks:
        table = hamming_table(records, block, ratios, grid["cached"], grid["thresholds"], scopes[block],
                              profile=profile.name)
        md += [f"Hamming draw steps, {block.upper()} (total {total} steps):", "",
               hamming_markdown(table, ratios, grid["cached"], grid["thresholds"]), ""]

    # Figure 3
    block0 = "msa" if "msa" in records.blocks else records.blocks[0]
    if not 0 <= layer < records.layers:
        raise EarlyBirdError(f"report: --layer {layer} outside 0..{records.layers - 1}")
    fig_c = plot_coefficients(records, layer, out_dir / "coefficients.png", block0)
    md += ["## Coefficients and the nuclear norm of the masks (Figure 3)", "", f"![]({fig_c.name})", ""]
    for r in ratios:
        fig_n = plot_nuclear_norm(series[(block0, r)], stationarity["smooth"],
                                  out_dir / f"nuclear_norm_{block0}_{int(round(r * 100))}.png",
                                  f"Nuclear norm of the {block0.upper()} masks, ratio {r:.0%}")
        md += [f"![]({fig_n.name})", ""]

    # Figure 5
    md += ["## Ticket accuracy by pruning step and ratio (Figure 5)", "",
           ticket_table(kinds["ticket"], total, dense), ""]
    for run in kinds["random"]:
        md.append(f"Random-pruning baseline ({_ratio_label(run.ratios)}, seed {run.random_seed}, "
                  f"step {run.prune_step}): {run.metric[0]} {_fmt_metric(run.metric[1])} (`{run.path.name}`).")
    md.append("")

    # Figures 6 / 9 and the detector summary
    md += ["## Stationarity tests (Figures 6 and 9)", ""]
    detectors = profile.detectors
    params = {block: {method: scaled_params(method, total, scale, profile.name, block)[0] for method in detectors}
              for block in records.blocks}
    titles = {method: cls(**params[block0][method]).describe() for method, cls in detectors.items()}
    detections = {}
    for r in ratios:
        for block in records.blocks:
            # every registered detector, with the study's parameters scaled to this run, in one pass over the masks;
            # full traces (the p-values are plotted)
            results = detect_many(records, block, r, scopes[block], params[block], stop_at_draw=False,
                                  profile=profile.name)
            detections[(block, r)] = results
            fig_p = plot_pvalues(results, titles, out_dir / f"pvalues_{block}_{int(round(r * 100))}.png",
                                 f"EB identification, {block.upper()} masks, {r:.0%} pruning")
            md += [f"![]({fig_p.name})", ""]

    md += ["## Detector summary", "", _detector_summary(detections, titles, total, kinds, slim_run, dense), ""]
    if kinds["ebtrain"]:
        md += ["## EB-Train against dense training", "", _ebtrain_table(kinds["ebtrain"], dense, slim_run), ""]
    report = out_dir / REPORT
    write_text_atomic("\n".join(md) + "\n", report)
    log(f"report: {report}")
    return report


def _detector_summary(detections: dict, titles: dict, total: int, kinds: dict, slim_run: Run | None,
                      dense: Run | None) -> str:
    tickets = {(t.prune_step, t.ratios): t for t in kinds["ticket"]}
    flops_per_step = None
    if slim_run is not None and slim_run.results.get("train_flops") and slim_run.results.get("step"):
        flops_per_step = slim_run.results["train_flops"] / slim_run.results["step"]
    metric = (kinds["ticket"][0].metric[0] if kinds["ticket"] else "accuracy")
    rows = []
    # a profile that reports the original code's numbers gets a column for them
    indexed = any(result.indexed for results in detections.values() for result in results.values())
    for (block, ratio), results in detections.items():
        for method, result in results.items():
            step = result.draw_step
            ticket = tickets.get((step, (ratio, ratio))) if step is not None else None
            compute = "—" if step is None or flops_per_step is None else f"{flops_per_step * step:.3g}"
            rows.append([block.upper(), f"{ratio:.0%}", titles[method], _fmt_step(step),
                         *([_fmt_step(result.draw_index)] if indexed else []), _pct(step, total),
                         _fmt_metric(ticket.metric[1]) if ticket else "—", compute])
    text = markdown_table(["block", "ratio", "detector", "draw step", *(["original code's number"] if indexed else []),
                           "% of training", f"ticket {metric}", "training FLOPs until the draw"], rows)
    if dense is not None:
        text += f"\n\nDense model: {dense.metric[0]} {_fmt_metric(dense.metric[1])}."
    if flops_per_step is None:
        text += "\n\n_Compute until the draw needs the slimming run's `results.json` (train_flops)._"
    return text


def _ebtrain_table(runs: list[Run], dense: Run | None, slim_run: Run | None) -> str:
    rows = []
    reference = dense or slim_run
    for run in runs:
        eb = run.ebtrain or {}
        flops = (eb.get("flops") or {}).get("total", run.results.get("train_flops"))
        wall = run.results.get("train_wall_s")
        ref_flops = reference.results.get("train_flops") if reference else None
        ref_wall = reference.results.get("train_wall_s") if reference else None
        rows.append([f"`{run.path.name}`", eb.get("method"), _fmt_step(eb.get("draw_step")),
                     _pct(eb.get("draw_step"), eb.get("total_steps")), f"{flops:.3g}" if flops else "—",
                     f"{ref_flops / flops:.2f}×" if flops and ref_flops else "—",
                     f"{wall:.1f}" if wall else "—", f"{ref_wall / wall:.2f}×" if wall and ref_wall else "—",
                     _fmt_metric(run.metric[1])])
    if reference is not None:
        rows.append([f"`{reference.path.name}` ({reference.kind})", "—", "—", "—",
                     f"{reference.results.get('train_flops', 0):.3g}", "1.00×",
                     f"{reference.results.get('train_wall_s', 0):.1f}", "1.00×", _fmt_metric(reference.metric[1])])
    metric = runs[0].metric[0]
    return markdown_table(["run", "detector", "draw step", "% of training", "training FLOPs", "FLOPs saving",
                           "wall (s)", "wall saving", metric], rows)
