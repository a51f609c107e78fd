"""The study's figures and tables for any slimming run (and the runs trained from it).

`build_report(run_dirs, out_dir)` reads a slimming run's records (ours or the original research layout) and, when
given, the ticket, dense and EB-Train run directories, and writes `report.md` with PNG figures:

- consecutive-mask Hamming distances for MSA and MLP at two ratios with the Hamming rule's statistic and threshold ε,
  and the table of Hamming draw steps (Figure 2);
- the coefficient trajectories of one layer's heads and of a subset of its neurons, and the nuclear norm of the masks
  with its moving average (Figure 3);
- ticket accuracy by pruning step x ratio with the dense reference and the random baselines, as a plot and a table
  (Figure 5);
- each stationarity test's p-value trace with its threshold, its passing checks (those decided on a constant window
  apart) and its draw (Figures 6 and 9);
- a detector summary: draw step (absolute and % of training), the accuracy of the ticket drawn there, the compute
  spent until the draw, and EB-Train's total compute and accuracy against dense training.

Every detector's draw is marked on the Hamming, nuclear-norm and ticket figures, in one style per detector
(`detector_styles`, from the registry); each PNG carries what it marks (`figure_annotations`). Every number in the
report is computed here from the files it names, under one detection profile (`earlybird.profiles`, named in the
report's header).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .blocks import BLOCK_NAMES, BLOCKS
from .detectors import (DETECTORS, STUDY_STEPS, HammingEB, json_safe, detect_many, hamming_table, scaled_params,
                        smooth_series, study_params)
from .errors import EarlyBirdError
from .fileio import write_text_atomic
from .layout import EBTRAIN, REPORT, RESULTS, RUN_KINDS, Run, RunLayout, read_json, read_run, records_path
from .masks import compute_mask, hamming_distance, nuclear_norm
from .profiles import get_profile
from .records import Records, load_records

# What a transformers Trainer writes with its state (Trainer.save_state and every checkpoint)
TRAINER_STATE = "trainer_state.json"
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
        masks = compute_mask(coefs, ratio, scope, profile.mask_rule, group_size=records.group_size(block))
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

# PNG text chunk holding, as JSON, what a figure marks (draw steps, thresholds, ...): `figure_annotations` reads it.
ANNOTATIONS_KEY = "earlybird-annotations"
# Detector styles: colours for detectors only (the data are drawn in black and grey), so a colour always means a
# detector; the colours, markers and line styles cycle independently, so the first 36 detectors all look different.
_COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive",
           "tab:cyan")
_MARKERS = ("v", "o", "s", "D", "^", "P", "X", "*", "h", "<", ">")
_LINESTYLES = ("-", "--", ":", "-.")
_DPI = 110
_PANEL = (5.2, 2.6)  # inches of one data axes
_STRIP_ROW = 0.19  # inches per detector in the draw strip above an axes


@dataclass(frozen=True)
class DetectorStyle:
    color: str
    marker: str
    linestyle: str


def detector_styles() -> dict[str, DetectorStyle]:
    """One colour, marker and line style per registered detector, from its place in `DETECTORS`: the same detector
    looks the same in every figure, and a newly registered one gets a style of its own."""
    return {method: DetectorStyle(_COLORS[i % len(_COLORS)], _MARKERS[i % len(_MARKERS)],
                                  _LINESTYLES[i % len(_LINESTYLES)])
            for i, method in enumerate(DETECTORS)}


def figure_annotations(path) -> dict:
    """What a report figure marks, as it was drawn (draw steps per panel, thresholds, ...), read back from the PNG."""
    from PIL import Image

    with Image.open(path) as image:
        return json.loads(image.text[ANNOTATIONS_KEY])


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _figure(width: float, height: float):
    return _pyplot().figure(figsize=(width, height), layout="constrained")


def _save(fig, path: Path, annotations: dict) -> Path:
    """Write the figure with its annotations (see `figure_annotations`) and close it. Offset notation is off on every
    axis: a tick reads as the value itself, never as `1e-3 + 0.998`."""
    from matplotlib.ticker import ScalarFormatter

    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            if isinstance(axis.get_major_formatter(), ScalarFormatter):
                axis.get_major_formatter().set_useOffset(False)
    fig.savefig(path, dpi=_DPI, metadata={ANNOTATIONS_KEY: json.dumps(json_safe(annotations))})
    _pyplot().close(fig)
    return path


def draw_steps(results: dict) -> dict:
    """{method: draw step or None} of one (block, ratio)'s detection results: what the figures mark."""
    return {method: result.draw_step for method, result in results.items()}


def _panel_axes(fig, spec, detectors: int):
    """(strip, axes): a data axes and above it a strip with one row per detector, sharing the x axis."""
    if not detectors:
        ax = fig.add_subplot(spec)
        return ax, ax
    sub = spec.subgridspec(2, 1, height_ratios=(_strip_height(detectors), _PANEL[1]))
    ax = fig.add_subplot(sub[1])
    strip = fig.add_subplot(sub[0], sharex=ax)
    return strip, ax


def _strip_height(detectors: int) -> float:
    return _STRIP_ROW * detectors + 0.1 if detectors else 0.0


def _mark_draws(strip, ax, draws: dict, styles: dict, total: int, labels: dict | None = None) -> None:
    """Each detector's draw: in the strip, its row (named by the method) holds its marker at the draw step with the
    step written next to it (or `never`); across the axes, a vertical line in its colour and line style. Detectors
    drawing at the same step stay distinguishable: one row each."""
    from matplotlib.transforms import blended_transform_factory

    methods = list(draws)
    rows = {method: len(methods) - 1 - i for i, method in enumerate(methods)}  # first detector on top
    for method, step in draws.items():
        style, y = styles[method], rows[method]
        if step is None:
            strip.text(0.99, y, "never", transform=blended_transform_factory(strip.transAxes, strip.transData),
                       ha="right", va="center", fontsize=7, color=style.color)
            continue
        ax.axvline(step, color=style.color, ls=style.linestyle, lw=1.1, alpha=0.9, zorder=1)
        strip.plot([step], [y], ls="none", marker=style.marker, color=style.color, ms=5.5, clip_on=False)
        left = step > 0.8 * total  # labels near the right edge go to the left of their marker
        strip.annotate(str(step) if labels is None else labels[method], (step, y), xytext=(-6 if left else 6, 0),
                       textcoords="offset points", ha="right" if left else "left", va="center", fontsize=7)
    strip.set_ylim(-0.7, len(methods) - 0.3)
    strip.set_yticks(sorted(rows.values()), sorted(rows, key=rows.get), fontsize=7)
    strip.tick_params(axis="x", which="both", bottom=False, labelbottom=False)
    strip.tick_params(axis="y", length=0)
    for y in rows.values():
        strip.axhline(y, color="0.9", lw=0.6, zorder=0)


def _detector_handles(methods, styles: dict, titles: dict) -> list:
    from matplotlib.lines import Line2D

    return [Line2D([], [], color=styles[m].color, ls=styles[m].linestyle, marker=styles[m].marker, ms=5,
                   label=f"{m}: {titles[m]}") for m in methods]


_CHAR_INCHES = 0.55 / 72  # the width of an average character per point of font size (DejaVu Sans)


def _text_inches(text: str, fontsize: float) -> float:
    return len(text) * fontsize * _CHAR_INCHES


def _legend_below(fig, handles: list, ncol: int = 2, fontsize: float = 8) -> None:
    """The figure's legend under its axes: it never covers a trace. Its columns are as many as the longest entry
    allows in the figure's width (a one-panel figure gets one column), so no entry runs off the canvas."""
    width = fig.get_figwidth()
    longest = max((_text_inches(h.get_label(), fontsize) for h in handles), default=0.0) + 0.6  # + handle and gap
    ncol = max(1, min(ncol, len(handles), int(width // longest)))
    fig.legend(handles=handles, loc="outside lower center", ncol=ncol, fontsize=fontsize, frameon=False)


def _title(fig, text: str, fontsize: float = 12) -> None:
    """The figure's title, wrapped to the figure's width (a one-panel figure would cut a long title off)."""
    import textwrap

    fig.suptitle(textwrap.fill(text, max(20, int(0.92 * fig.get_figwidth() / (fontsize * _CHAR_INCHES)))),
                 fontsize=fontsize)


def _steps_xlim(ax, total_steps: int, marked=()) -> None:
    """The x axis of a figure over training steps: 0 .. the run's length, with a margin on both sides so that a
    draw or a check at the first or the last step (and its marker) is drawn whole, never half on the frame."""
    right = max([max(total_steps, 1), *(int(s) for s in marked if s is not None)])
    pad = 0.03 * right
    ax.set_xlim(-pad, right + pad)


def plot_hamming(series: dict, detections: dict, titles: dict, total_steps: int, out: Path) -> Path:
    """Figure 2 (a, b): consecutive-mask Hamming distance over steps; rows are blocks (MSA first), columns ratios.

    Every detector's draw on that block's masks at that ratio is marked (strip above each panel and a vertical line),
    with the Hamming rule's own statistic -- at each check, the largest distance between the newest mask and the
    other cached ones -- and its threshold ε.
    """
    from matplotlib.lines import Line2D

    styles = detector_styles()
    hamming = HammingEB.method
    blocks = sorted({b for b, _ in series}, key=lambda b: b != "msa")
    ratios = sorted({r for _, r in series})
    methods = list(next(iter(detections.values())))
    fig = _figure(_PANEL[0] * len(ratios), (_PANEL[1] + _strip_height(len(methods)) + 0.5) * len(blocks) + 1.2)
    grid = fig.add_gridspec(len(blocks), len(ratios))
    panels = []
    for row, block in enumerate(blocks):
        for col, ratio in enumerate(ratios):
            s, results = series[(block, ratio)], detections[(block, ratio)]
            strip, ax = _panel_axes(fig, grid[row, col], len(methods))
            ax.plot(s["steps"][1:], s["distance"], lw=0.8, color="black", zorder=3)
            panel = {"block": block, "ratio": ratio, "draws": draw_steps(results)}
            if hamming in results:
                rule = results[hamming]
                trace = rule.trace
                ax.plot([e["step"] for e in trace], [e["distance"] for e in trace], lw=0.8, color=styles[hamming].color,
                        alpha=0.7, drawstyle="steps-post", zorder=2)
                ax.axhline(rule.params["threshold"], color=styles[hamming].color, ls=(0, (4, 2)), lw=1.0)
                panel.update(epsilon=rule.params["threshold"], cached=rule.params["cached"])
            _mark_draws(strip, ax, panel["draws"], styles, total_steps)
            strip.set_title(f"{BLOCKS[block].title}, pruning ratio {ratio:.0%}", fontsize=10)
            ax.set_xlabel("training step")
            ax.set_ylabel("Hamming distance")
            _steps_xlim(ax, total_steps, panel["draws"].values())
            panels.append(panel)
    handles = [Line2D([], [], color="black", lw=0.8, label="distance between consecutive masks")]
    if hamming in methods:
        params = detections[(blocks[0], ratios[0])][hamming].params
        handles += [Line2D([], [], color=styles[hamming].color, lw=0.8, alpha=0.7,
                           label=f"Hamming rule: largest distance from the newest mask to the {params['cached'] - 1} "
                                 "older cached ones"),
                    Line2D([], [], color=styles[hamming].color, ls=(0, (4, 2)), lw=1.0,
                           label=f"ε = {params['threshold']} (the Hamming rule draws below it)")]
    _legend_below(fig, handles + _detector_handles(methods, styles, titles))
    _title(fig, "Normalised Hamming distance between pruning masks, and each detector's draw")
    return _save(fig, out, {"figure": "hamming_distances", "panels": panels})


def _pick_units(coefs: np.ndarray, count: int) -> np.ndarray:
    """`count` units spread evenly over the final ranking (largest |coefficient| first), in that order."""
    order = np.argsort(-np.abs(coefs[-1]), kind="stable")
    if count >= len(order):
        return order
    return order[np.unique(np.linspace(0, len(order) - 1, count).round().astype(int))]


def plot_coefficients(records: Records, layer: int, out: Path, max_heads: int = 12, max_neurons: int = 8) -> Path:
    """Figure 3 (a): one layer's coefficient trajectories, every block: its heads (up to `max_heads`) and a subset of
    its neurons spread over their final ranking. All panels of a block share their y limits, so the units can be
    ranked by eye; each panel names its unit's rank at the last step."""
    blocks = sorted(records.blocks, key=lambda b: b != "msa")
    picks = {b: _pick_units(records.block(b)[:, layer], max_heads if b == "msa" else max_neurons) for b in blocks}
    cols = 4
    rows = {b: math.ceil(len(p) / cols) for b, p in picks.items()}
    fig = _figure(3.2 * cols, sum(2.0 * r + 0.6 for r in rows.values()) + 0.5)
    subfigs = np.atleast_1d(fig.subfigures(len(blocks), 1, height_ratios=[2.0 * rows[b] + 0.6 for b in blocks]))
    panels = []
    for subfig, block in zip(subfigs, blocks):
        coefs = records.block(block)[:, layer]
        ranks = {int(u): r for r, u in enumerate(np.argsort(-np.abs(coefs[-1]), kind="stable"))}
        # every unit: in index order; a subset: in rank order
        shown = sorted(picks[block]) if len(picks[block]) == coefs.shape[1] else picks[block]
        axes = subfig.subplots(rows[block], cols, sharex=True, sharey=True, squeeze=False)
        unit = BLOCKS[block].unit
        for i, ax in enumerate(axes.flat):
            if i >= len(shown):
                ax.axis("off")
                continue
            u = int(shown[i])
            ax.plot(records.steps, coefs[:, u], lw=0.8, color="black")
            ax.set_title(f"{unit} {u} (rank {ranks[u] + 1} of {coefs.shape[1]})", fontsize=9)
            ax.tick_params(labelsize=7)
            if i % cols == 0:
                ax.set_ylabel("coefficient", fontsize=8)
            if i >= len(shown) - cols:
                ax.set_xlabel("step", fontsize=8)
                ax.xaxis.set_tick_params(labelbottom=True)
        what = (f"its {len(shown)} {BLOCKS[block].units}" if len(shown) == coefs.shape[1] else
                f"{len(shown)} of its {coefs.shape[1]} {BLOCKS[block].units}, spread over their final ranking")
        subfig.suptitle(f"{BLOCKS[block].title}: {what}", fontsize=10)
        panels.append({"block": block, "layer": layer, "units": [int(u) for u in shown],
                       "ylim": [float(v) for v in axes.flat[0].get_ylim()]})
    _title(fig, f"Slimming coefficients of layer {layer} (rank 1 = the largest |coefficient| at the last step)")
    return _save(fig, out, {"figure": "coefficients", "panels": panels})


def plot_nuclear_norm(series: dict, results: dict, titles: dict, smooth: int, total_steps: int, out: Path,
                      title: str) -> Path:
    """Figure 3 (b): the nuclear norm of the masks with its moving average, and each detector's draw on them."""
    from matplotlib.lines import Line2D

    styles = detector_styles()
    draws = draw_steps(results)
    fig = _figure(7.2, _PANEL[1] + 0.6 + _strip_height(len(draws)) + 0.9 + 0.2 * math.ceil(len(draws) / 2))
    strip, ax = _panel_axes(fig, fig.add_gridspec(1, 1)[0, 0], len(draws))
    ax.plot(series["steps"], series["norm"], lw=0.8, color="0.55")
    ax.plot(series["steps"], smooth_series(series["norm"], smooth), lw=1.6, color="black")
    _mark_draws(strip, ax, draws, styles, total_steps)
    _steps_xlim(ax, total_steps, draws.values())
    ax.set_xlabel("training step")
    ax.set_ylabel("nuclear norm")
    strip.set_title(title, fontsize=11)
    handles = [Line2D([], [], color="0.55", lw=0.8, label="nuclear norm of the masks"),
               Line2D([], [], color="black", lw=1.6, label=f"moving average ({smooth} steps)")]
    _legend_below(fig, handles + _detector_handles(draws, styles, titles))
    return _save(fig, out, {"figure": "nuclear_norm", "panels": [{"draws": draws, "smooth": smooth}]})


def plot_pvalues(results: dict, titles: dict, total_steps: int, out: Path, title: str) -> Path:
    """Figures 6 / 9: each stationarity test's p-value at every check, its threshold, its draw; passing checks
    filled, and checks decided on a constant window (stationary by convention, no test run) as open markers."""
    styles = detector_styles()
    methods = [m for m in results if _plots_p_values(m)]
    fig = _figure(4.8 * len(methods), 4.6)
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    panels = []
    for ax, method in zip(axes, methods):
        result, style = results[method], styles[method]
        trace = [e for e in result.trace if e.get("p_value") is not None]
        alpha = result.params["alpha"]
        tested = [e for e in trace if not e.get("constant")]
        constant = [e for e in trace if e.get("constant")]
        passing = [e for e in tested if e["passed"]]
        failing = [e for e in tested if not e["passed"]]
        # a legend entry for each kind of point only when there is such a point
        ax.plot([e["step"] for e in trace], [e["p_value"] for e in trace], color="black", lw=0.8, zorder=2,
                label="p-value at each check" if trace else None)
        ax.axhline(alpha, color="0.35", ls=(0, (4, 2)), lw=1.0, label=f"threshold α = {alpha}")
        ax.plot([e["step"] for e in failing], [e["p_value"] for e in failing], ls="none", marker=".", ms=4,
                color="black", zorder=3, label="test fails" if failing else None)
        ax.plot([e["step"] for e in passing], [e["p_value"] for e in passing], ls="none", marker=style.marker, ms=4,
                color=style.color, zorder=3, label="test passes" if passing else None)
        ax.plot([e["step"] for e in constant], [e["p_value"] for e in constant], ls="none", marker=style.marker,
                ms=5, mfc="white", mec=style.color, mew=0.9, zorder=3,
                label="constant window: stationary by convention, not tested" if constant else None)
        step = result.draw_step
        if step is None:
            ax.plot([], [], color=style.color, ls=style.linestyle, lw=1.3, label="draw: never")
        else:
            ax.axvline(step, color=style.color, ls=style.linestyle, lw=1.3, label=f"draw: step {step}")
        ax.set_ylim(-0.04, 1.04)
        _steps_xlim(ax, total_steps, [step, *(e["step"] for e in trace)])
        ax.set_xlabel("training step")
        ax.set_ylabel("p-value")
        ax.set_title(f"{method}: {titles[method]}", fontsize=10, color=style.color)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, fontsize=7, frameon=False)
        panels.append({"method": method, "alpha": alpha, "draw": step, "passes": [e["step"] for e in passing],
                       "constant": [e["step"] for e in constant], "fails": [e["step"] for e in failing]})
    _title(fig, title)
    return _save(fig, out, {"figure": "pvalues", "panels": panels})


# How a ticket's training started (`--rewind`): each is its own curve and table column, never joined with the other.
REWINDS = {"init": dict(label="ticket rewound to the initial weights (--rewind init)", marker="o", ls="-",
                        color="black", column="rewound to init"),
           "none": dict(label="ticket trained on from its pruning step's weights (--rewind none)", marker="s",
                        ls=(0, (5, 2)), color="0.4", column="from the pruning step"),
           "checkpoint": dict(label="ticket started from --init-checkpoint", marker="^", ls=":", color="0.25",
                              column="from --init-checkpoint")}


def ticket_rewind(run: Run) -> str:
    """How the ticket run started, from its `args.json`: `init`, `none` or `checkpoint` (--init-checkpoint); a run
    without args.json is taken to use the default (`init`)."""
    args = read_json(RunLayout(run.path).args) or {}
    if args.get("init_checkpoint"):
        return "checkpoint"
    return args.get("rewind") or "init"


def _ticket_curves(tickets: list[Run], ratio) -> dict:
    """{rewind: {pruning step: metric in %}} of the tickets at `ratio`, in REWINDS' order."""
    curves = {}
    for t in tickets:
        if t.ratios == ratio and t.prune_step is not None and t.metric[1] is not None:
            curves.setdefault(ticket_rewind(t), {})[t.prune_step] = 100 * t.metric[1]
    return {r: dict(sorted(curves[r].items())) for r in REWINDS if r in curves}


def plot_tickets(tickets: list[Run], dense: Run | None, randoms: list[Run], draws: dict, titles: dict,
                 total_steps: int, out: Path) -> Path:
    """Figure 5: ticket accuracy against pruning step, one panel per ratio, with the dense reference, the random-pruning
    baselines, and each detector's draw (`draws`: {ratios: {method: step}}), labelled with the ticket's accuracy there
    when one was trained. Tickets rewound to init and tickets trained on from the pruning step are separate curves.
    The legend lists only what is drawn."""
    from matplotlib.lines import Line2D

    styles = detector_styles()
    metric = tickets[0].metric[0]
    ratios = sorted({t.ratios for t in tickets})
    methods = list(next(iter(draws.values()), {}))
    fig = _figure(max(_PANEL[0] * len(ratios), 6.4), _PANEL[1] + _strip_height(len(methods)) + 2.4)
    grid = fig.add_gridspec(1, len(ratios))
    panels, first, drawn = [], None, set()
    for col, ratio in enumerate(ratios):
        strip, ax = _panel_axes(fig, grid[0, col], len(draws.get(ratio, {})))
        first = first or ax
        if ax is not first:
            ax.sharey(first)  # the ratios on one scale
        curves = _ticket_curves(tickets, ratio)
        for rewind, curve in curves.items():
            look = REWINDS[rewind]
            ax.plot(list(curve), list(curve.values()), color=look["color"], marker=look["marker"], ms=3.5, lw=1.0,
                    ls=look["ls"])
            drawn.add(rewind)
        panel = {"ratios": list(ratio), "tickets": curves.get("init", {}), "draws": draws.get(ratio, {}),
                 **{f"tickets_rewind_{r}": c for r, c in curves.items() if r != "init"}}
        if dense is not None and dense.metric[1] is not None:
            ax.axhline(100 * dense.metric[1], color="0.35", ls=(0, (4, 2)), lw=1.0)
            panel["dense"] = 100 * dense.metric[1]
            drawn.add("dense")
        baseline = [(r.prune_step, 100 * r.metric[1]) for r in randoms if r.ratios == ratio and r.metric[1] is not None]
        if baseline:
            ax.plot(*zip(*baseline), ls="none", marker="X", ms=7, color="0.45")
            panel["random"] = baseline
            drawn.add("random")
        if panel["draws"]:
            labels = {m: f"{s}" + "".join(f"{':' if i == 0 else ' /'} {c[s]:.1f}"
                                          for i, c in enumerate(c for c in curves.values() if s in c))
                      for m, s in panel["draws"].items()}
            _mark_draws(strip, ax, panel["draws"], styles, total_steps, labels)
        strip.set_title(f"pruning ratio {_ratio_label(ratio)}", fontsize=10)
        _steps_xlim(ax, total_steps, [*panel["draws"].values(), *(s for c in curves.values() for s in c)])
        ax.set_xlabel(f"pruning step (of {total_steps} training steps)")
        ax.set_ylabel(f"ticket {metric} (%)")
        panels.append(panel)
    handles = [Line2D([], [], color=look["color"], marker=look["marker"], ms=3.5, lw=1.0, ls=look["ls"],
                      label=look["label"] if len(drawn & set(REWINDS)) > 1 else "ticket pruned at that step")
               for rewind, look in REWINDS.items() if rewind in drawn]
    if "dense" in drawn:
        handles.append(Line2D([], [], color="0.35", ls=(0, (4, 2)), lw=1.0,
                              label=f"dense model: {_fmt_metric(dense.metric[1])}"))
    if "random" in drawn:
        handles.append(Line2D([], [], color="0.45", ls="none", marker="X", ms=7, label="random pruning (same counts)"))
    _legend_below(fig, handles + _detector_handles(methods, styles, titles))
    _title(fig, f"Ticket {metric} by pruning step; each detector's draw labelled with the ticket's {metric} there")
    return _save(fig, out, {"figure": "tickets", "panels": panels})


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
    cell = {(t.prune_step, t.ratios, ticket_rewind(t)): t.metric[1] for t in tickets}
    rewinds = [r for r in REWINDS if any(key[2] == r for key in cell)]
    # one column per ratio, and per way of starting the ticket when there are several
    columns = [(r, w) for r in ratios for w in rewinds if any(key[1:] == (r, w) for key in cell)]
    rows = [[_pct(s, total_steps), s] + [_fmt_metric(cell.get((s, r, w))) for r, w in columns] for s in steps]
    text = markdown_table(["% of steps", "pruning step"] + [_ratio_label(r) + (f" ({REWINDS[w]['column']})"
                                                                              if len(rewinds) > 1 else "")
                                                            for r, w in columns], rows)
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


@dataclass(frozen=True)
class RunAccount:
    """What the run that holds the records says about itself: what kind of run it is, its length (the training
    budget, which the detectors' scaling and the "% of training" use) and its FLOPs per step before any pruning
    (what "FLOPs until the draw" multiplies), each with the file it came from. A run whose records stop at a draw
    (EB-Train, a Trainer with stop_at_draw) is longer than its records."""

    kind: str  # one line: what kind of run, in words
    total_steps: int
    flops_per_step: float | None = None
    sources: str = ""  # where the length and the FLOPs came from

    def describe(self, records: Records) -> str:
        last = int(records.steps[-1])
        ends = ("" if last >= self.total_steps else
                f" Its records end at step {last}, before the end of its {self.total_steps}-step budget: the draw "
                "stopped them.")
        flops = ("" if self.flops_per_step is None else
                 f" Training FLOPs per step before any pruning: {self.flops_per_step:.3g}.")
        return (f"Run: {self.kind}; {self.total_steps} training steps ({self.sources}).{ends}{flops} "
                "Draw steps are given as a share of these training steps, and the stationarity parameters are "
                "scaled to them.")


def _trainer_state(path: Path) -> tuple[dict | None, Path | None]:
    """The Trainer's own state: `<output_dir>/trainer_state.json` (Trainer.save_state), else the newest checkpoint's."""
    candidates = [path / TRAINER_STATE] + sorted(path.glob(f"checkpoint-*/{TRAINER_STATE}"), reverse=True,
                                                  key=lambda p: int(p.parent.name.split("-")[-1])
                                                  if p.parent.name.split("-")[-1].isdigit() else -1)
    for candidate in candidates:
        state = read_json(candidate)
        if state is not None:
            return state, candidate
    return None, None


def run_account(path: Path | None, records: Records) -> RunAccount:
    """The run's account of itself (see `RunAccount`), from what it wrote: `results.json` and `ebtrain.json` for
    this project's runs, the callback's `ebtrain.json`, the records' meta and `trainer_state.json` for a Trainer's
    output directory; records alone give their own last step and no FLOPs."""
    last = int(records.steps[-1])  # step S is the state after S optimizer updates
    run = read_run(path) if path is not None and path.is_dir() else None
    if run is None:
        return RunAccount("records only (no run directory)", last, None, "the records' last step")
    results, eb = run.results, run.ebtrain or {}
    eb_flops = eb.get("flops") or {}
    if run.kind == "ebtrain" or (eb and not eb.get("trainer")):
        total = int(eb.get("total_steps") or results.get("step") or last)
        draw = eb.get("draw_step")
        rate = (eb_flops["before_draw"] / draw if draw and eb_flops.get("before_draw") else
                results["train_flops"] / total if results.get("train_flops") and not draw else None)
        drew = f"drew at step {draw} and pruned itself there" if draw else "never drew"
        return RunAccount(f"EB-Train (kind `ebtrain`: slimming with a detector; it {drew})", total, rate,
                          f"`{EBTRAIN}` total_steps; FLOPs: its FLOPs before the draw over the draw step")
    if eb.get("trainer") or records.meta.get("trainer"):
        state, where = _trainer_state(run.path)
        total = int(eb.get("total_steps") or records.meta.get("max_steps") or (state or {}).get("max_steps") or last)
        source = (f"`{EBTRAIN}` (the callback's)" if eb.get("total_steps") else
                  "the records' meta (max_steps)" if records.meta.get("max_steps") else
                  f"`{where.relative_to(run.path)}`" if state and state.get("max_steps") else "the records' last step")
        rate, flops_source = None, "no FLOPs"
        if eb.get("steps_run") and eb_flops.get("total"):
            rate, flops_source = eb_flops["total"] / eb["steps_run"], f"the Trainer's total_flos from `{EBTRAIN}`"
        elif state and state.get("total_flos") and state.get("global_step"):
            rate = state["total_flos"] / state["global_step"]
            flops_source = f"the Trainer's total_flos from `{where.relative_to(run.path)}`"
        draw = eb.get("draw_step")
        how = ("" if not eb else f"; it drew at step {draw}" + (" and stopped there" if eb.get("stopped_at_draw")
                                                                 else "") if draw else "; it never drew")
        return RunAccount(f"a transformers Trainer with EarlyBirdCallback{how}", total, rate,
                          f"{source}; FLOPs: {flops_source}")
    kind = run.kind or "unknown kind"
    total = int(results.get("step") or last)
    rate = results["train_flops"] / results["step"] if results.get("train_flops") and results.get("step") else None
    return RunAccount(f"kind `{kind}` ({'slimming' if kind == 'slim' else kind})", total, rate,
                      f"`{RESULTS}` step and train_flops" if results.get("step") else "the records' last step")


def build_report(run_dirs, out_dir=None, *, ratios=(0.3, 0.8), scope: str | None = None, layer: int = 0,
                 scale: bool = True, hamming_grid: dict | None = None, profile: str | None = None, log=print) -> Path:
    """Write `report.md` and its figures for the slimming run (first path with records) and the other runs, under
    the detection profile `profile` (default `paper`; `scope` None: the profile's default scope per block)."""
    profile = get_profile(profile)
    run_dirs = [Path(p) for p in run_dirs]
    if not run_dirs:
        raise EarlyBirdError("report: give at least one run directory (or records path)")
    records, slim_run, slim_path, others = None, None, None, []
    for path in run_dirs:
        if records is None and _holds_records(path):
            records = load_records(records_path(path))
            slim_run = read_run(path) if RunLayout(path).is_run() else None
            slim_path = path if RunLayout(path).is_run() else None
        else:
            others.append(read_run(path))
    if records is None:
        raise EarlyBirdError(f"report: none of {', '.join(map(str, run_dirs))} holds coefficient records")
    out_dir = Path(out_dir) if out_dir else (run_dirs[0] if run_dirs[0].is_dir() else run_dirs[0].parent) / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = {**PAPER_HAMMING_GRID, **(hamming_grid or {})}
    ratios = tuple(float(r) for r in ratios)
    account = run_account(slim_path, records)
    total = account.total_steps
    scopes = {block: profile.scope(block, scope) for block in records.blocks}
    stationarity, study, floors, factor = study_stationarity(total, scale, profile.name)
    log(f"report: {records.total_steps} recorded steps (last step {int(records.steps[-1])}) from {records.path}; "
        f"run: {account.kind}, {total} training steps")
    log(f"report: stationarity parameters {stationarity} (the study's {study} x {factor:.4f}, "
        f"run length {total} / {STUDY_STEPS} steps)" if factor < 1 else
        f"report: stationarity parameters {stationarity} (the study's)")
    kinds = _classify(others, log)
    dense = kinds["dense"][0] if kinds["dense"] else None
    md = [f"# Early-bird report: `{records.path}`", ""]
    md.append(f"Records: {records.total_steps} steps (steps {int(records.steps[0])}..{int(records.steps[-1])}), "
              f"blocks {', '.join(records.blocks)}, {records.layers} layers"
              + (f", model `{records.meta.get('model_type')}`" if records.meta.get("model_type") else "") + ".")
    md += ["", account.describe(records), ""]
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

    block0 = "msa" if "msa" in records.blocks else records.blocks[0]
    if not 0 <= layer < records.layers:
        raise EarlyBirdError(f"report: --layer {layer} outside 0..{records.layers - 1}")

    # Detection first: the figures mark every detector's draw
    detectors = profile.detectors
    params = {block: {method: scaled_params(method, total, scale, profile.name, block)[0] for method in detectors}
              for block in records.blocks}
    titles = {method: cls(**params[block0][method]).describe() for method, cls in detectors.items()}
    detections = {}
    for r in ratios:
        for block in records.blocks:
            # every registered detector, with the study's parameters scaled to this run, in one pass over the masks;
            # full traces (the p-values are plotted)
            detections[(block, r)] = detect_many(records, block, r, scopes[block], params[block],
                                                    stop_at_draw=False, profile=profile.name)

    # Figure 2
    series = {(b, r): mask_series(records, b, r, scopes[b], profile.name) for b in records.blocks for r in ratios}
    fig = plot_hamming(series, detections, titles, total, out_dir / "hamming_distances.png")
    md += ["## Hamming distances between consecutive masks (Figure 2)", "", f"![]({fig.name})", ""]
    for block in records.blocks:
        table = hamming_table(records, block, ratios, grid["cached"], grid["thresholds"], scopes[block],
                              profile=profile.name)
        md += [f"Hamming draw steps, {block.upper()} (total {total} steps):", "",
               hamming_markdown(table, ratios, grid["cached"], grid["thresholds"]), ""]

    # Figure 3
    fig_c = plot_coefficients(records, layer, out_dir / "coefficients.png")
    md += ["## Coefficients and the nuclear norm of the masks (Figure 3)", "", f"![]({fig_c.name})", ""]
    for r in ratios:
        fig_n = plot_nuclear_norm(series[(block0, r)], detections[(block0, r)], titles, stationarity["smooth"], total,
                                  out_dir / f"nuclear_norm_{block0}_{int(round(r * 100))}.png",
                                  f"Nuclear norm of the {block0.upper()} masks, ratio {r:.0%}")
        md += [f"![]({fig_n.name})", ""]

    # Figure 5
    md += ["## Ticket accuracy by pruning step and ratio (Figure 5)", ""]
    if kinds["ticket"]:
        fig_t = plot_tickets(kinds["ticket"], dense, kinds["random"], _ticket_draws(kinds["ticket"], detections, block0),
                             titles, total, out_dir / "tickets.png")
        md += [f"![]({fig_t.name})", ""]
    md += [ticket_table(kinds["ticket"], total, dense), ""]
    for run in kinds["random"]:
        md.append(f"Random-pruning baseline ({_ratio_label(run.ratios)}, seed {run.random_seed}, "
                  f"step {run.prune_step}): {run.metric[0]} {_fmt_metric(run.metric[1])} (`{run.path.name}`).")
    md.append("")

    # Figures 6 / 9
    md += ["## Stationarity tests (Figures 6 and 9)", ""]
    for (block, r), results in detections.items():
        fig_p = plot_pvalues(results, titles, total, out_dir / f"pvalues_{block}_{int(round(r * 100))}.png",
                             f"EB identification, {block.upper()} masks, {r:.0%} pruning")
        md += [f"![]({fig_p.name})", ""]

    md += ["## Detector summary", "", _detector_summary(detections, titles, total, kinds, account, dense), ""]
    if kinds["ebtrain"]:
        md += ["## EB-Train against dense training", "", _ebtrain_table(kinds["ebtrain"], dense, slim_run), ""]
    report = out_dir / REPORT
    write_text_atomic("\n".join(md) + "\n", report)
    log(f"report: {report}")
    return report


def _ticket_draws(tickets: list[Run], detections: dict, block: str) -> dict:
    """{ticket ratios: {method: draw step}}: the draws on `block`'s masks at that block's ratio of the tickets."""
    which = BLOCK_NAMES.index(block)  # Run.ratios is (heads, neurons): the blocks' order
    return {t.ratios: draw_steps(detections[(block, t.ratios[which])]) for t in tickets
            if (block, t.ratios[which]) in detections}


def _detector_summary(detections: dict, titles: dict, total: int, kinds: dict, account: RunAccount,
                      dense: Run | None) -> str:
    tickets: dict = {}  # (step, ratios) -> {rewind: ticket}
    for t in kinds["ticket"]:
        tickets.setdefault((t.prune_step, t.ratios), {})[ticket_rewind(t)] = t
    several = len({r for by in tickets.values() for r in by}) > 1

    def ticket_cell(step, ratio) -> str:
        found = tickets.get((step, (ratio, ratio)), {}) if step is not None else {}
        return " / ".join(_fmt_metric(found[r].metric[1]) + (f" ({REWINDS[r]['column']})" if several else "")
                          for r in REWINDS if r in found) or "—"

    flops_per_step = account.flops_per_step
    metric = (kinds["ticket"][0].metric[0] if kinds["ticket"] else "accuracy")
    rows = []
    # a profile that reports the original code's numbers gets a column for them
    indexed = any(result.indexed for results in detections.values() for result in results.values())
    for (block, ratio), results in detections.items():
        for method, result in results.items():
            step = result.draw_step
            compute = "—" if step is None or flops_per_step is None else f"{flops_per_step * step:.3g}"
            rows.append([block.upper(), f"{ratio:.0%}", titles[method], _fmt_step(step),
                         *([_fmt_step(result.draw_index)] if indexed else []), _pct(step, total),
                         ticket_cell(step, ratio), compute])
    text = markdown_table(["block", "ratio", "detector", "draw step", *(["original code's number"] if indexed else []),
                           "% of training", f"ticket {metric}", "training FLOPs until the draw"], rows)
    if dense is not None:
        text += f"\n\nDense model: {dense.metric[0]} {_fmt_metric(dense.metric[1])}."
    if flops_per_step is None:
        text += ("\n\n_Compute until the draw needs the run's own FLOPs: `results.json` (train_flops), EB-Train's "
                 "`ebtrain.json`, or a Trainer's `trainer_state.json` (total_flos)._")
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
