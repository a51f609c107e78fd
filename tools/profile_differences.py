"""The differences between the `paper` and `original` detection profiles, measured on runs' records.

    .venv/bin/python tools/profile_differences.py RUN [RUN ...] [--study-values RUN ...] \
        -o docs/profile_differences.md --write docs/library.md

For each slimming run (its directory or records), MSA and MLP masks at ratios 0.3 and 0.8 and every detector: the
draw step under each profile, the original code's own number, and the draw step with one rule of the original
profile switched on at a time over the paper profile (the other rules the paper's). The stationarity detectors take
the study's step-counted parameters scaled to the run, as `earlybird report` and `reproduce` do; Hamming takes its
defaults (N = 5, eps = 0.1). A last column runs the original profile as the notebooks literally compute it (SVD
nuclear norms, statsmodels' OLS on flat windows), the two places where the profile deliberately does not.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

from earlybird.detectors import (DETECTORS, STUDY_STEPS, OriginalHammingEB, OriginalSlopeEB, SlopeEB,
                                 WindowedStationarityEB, default_maxlags, detect, feed, make_detector, scaled_params,
                                 slope_test)
from earlybird.fileio import replace_marked
from earlybird.layout import records_path
from earlybird.masks import compute_mask
from earlybird.records import load_records

RATIOS = (0.3, 0.8)
BLOCKS = ("msa", "mlp")
MARKER = "profile-differences"  # the summary's place in docs/library.md


class PlainOLSSlope(SlopeEB):
    """The paper's slope detector with the original's test: plain OLS instead of HAC (a flat window is still p = 1,
    the paper's rule, as StationarityEB handles it before the test)."""

    def test(self, window):
        return slope_test(window)


class WindowedHACSlope(OriginalSlopeEB):
    """The original's series and windows with the paper's slope test (HAC) and its flat-window rule (p = 1)."""

    def test(self, window):
        if window.min() == window.max():
            return None, 1.0
        return slope_test(window, default_maxlags(len(window)))


class LiteralOLSSlope(OriginalSlopeEB):
    """The original slope as the notebook computes it on a flat window: statsmodels' rounding-noise p-value."""

    def test(self, window):
        return slope_test(window)


def _params(method: str, total: int, profile: str, block: str) -> dict:
    return scaled_params(method, total, profile=profile, block=block)[0]


def _draw(records, block, ratio, scope, rule, detector, svd_norms: bool = False):
    """Feed `detector` the masks of one rule and scope; its draw step (None: never)."""
    masks = compute_mask(records.block(block), ratio, scope, rule)
    if svd_norms:  # the notebooks' numpy.linalg.norm(mask, 'nuc'): an SVD, whose last bits vary between equal norms
        for step, mask in zip(records.steps, masks):
            if detector.update_value(int(step), np.linalg.norm(mask.astype(np.float64), "nuc")):
                break
    else:
        feed(detector, records.steps, masks, stop_at_draw=True)
    return detector.draw_step


# One rule of the original switched on over the paper profile: label -> (applies to, function giving the draw step).
def _variants(records, total: int):
    def paper_params(method, block, **more):
        return {**_params(method, total, "paper", block), **more}

    def original_params(method, block):
        return _params(method, total, "original", block)

    return {
        "quantile masks": (lambda b, m: True, lambda b, r, m: _draw(
            records, b, r, "layerwise", "quantile", make_detector(m, **paper_params(m, b)))),
        "MLP global": (lambda b, m: b == "mlp", lambda b, r, m: _draw(
            records, b, r, "global", "magnitude", make_detector(m, **paper_params(m, b)))),
        "ε inclusive": (lambda b, m: m == "hamming", lambda b, r, m: _draw(
            records, b, r, "layerwise", "magnitude", OriginalHammingEB(**paper_params(m, b)))),
        "α 0.1": (lambda b, m: m in ("slope", "mk"), lambda b, r, m: _draw(
            records, b, r, "layerwise", "magnitude", make_detector(m, **paper_params(m, b, alpha=0.1)))),
        "OLS": (lambda b, m: m == "slope", lambda b, r, m: _draw(
            records, b, r, "layerwise", "magnitude", PlainOLSSlope(**paper_params(m, b)))),
        "windows": (lambda b, m: m != "hamming", lambda b, r, m: _draw(
            records, b, r, "layerwise", "magnitude", _windowed(m, b, original_params(m, b)))),
    }


def _windowed(method: str, block: str, params: dict) -> WindowedStationarityEB:
    """The original's series and windows with the paper's test and threshold."""
    if method == "slope":
        return WindowedHACSlope(**params, alpha=DETECTORS["slope"].param_spec()["alpha"].default)
    return make_detector(method, "original", block, **params, alpha=DETECTORS[method].param_spec()["alpha"].default)


def _literal(records, block, ratio, method, total) -> int | None:
    params = _params(method, total, "original", block)
    detector = LiteralOLSSlope(**params) if method == "slope" else make_detector(method, "original", block, **params)
    return _draw(records, block, ratio, "global" if block == "mlp" else "layerwise", "quantile", detector,
                 svd_norms=True)


def _fmt(step) -> str:
    return "never" if step is None else str(step)


def _delta(step, reference) -> str:
    return "—" if step is None or reference is None else f"{step - reference:+d}"


def measure(path: str, study_values: bool = False) -> dict:
    """Every (block, ratio, detector) of a run: the draws under both profiles and under each single rule, with the
    step-counted parameters scaled to the run (or, `study_values`, the study's own)."""
    records = load_records(records_path(path))
    total = int(records.steps[-1])
    length = STUDY_STEPS if study_values else total  # the run length the parameters are scaled to
    variants = _variants(records, length)
    rows = []
    for block in BLOCKS:
        if records.block(block) is None:
            continue
        for ratio in RATIOS:
            for method in DETECTORS:
                paper = detect(records, block, ratio, None, method, **_params(method, length, "paper", block))
                original = detect(records, block, ratio, None, method, profile="original",
                                  **_params(method, length, "original", block))
                rules = {label: variant(block, ratio, method) for label, (applies, variant) in variants.items()
                         if applies(block, method)}
                literal = _literal(records, block, ratio, method, length) if method != "hamming" else original.draw_step
                rows.append({"block": block, "ratio": ratio, "method": method, "paper": paper.draw_step,
                             "original": original.draw_step, "index": original.draw_index, "rules": rules,
                             "literal": literal})
    return {"path": path, "records": records, "total": total, "length": length, "rules": list(variants),
            "rows": rows}


def run_table(run: dict) -> str:
    records, total = run["records"], run["total"]
    scaled = " / ".join(str(v) for v in _params("slope", run["length"], "paper", "msa").values())
    lines = [f"### `{run['path']}`: {records.total_steps} records (steps {int(records.steps[0])}..{total}), "
             f"{records.layers} layers, {records.meta.get('heads')} heads, {records.meta.get('neurons')} neurons"
             + ("" if run["length"] == total else ", the study's values"), "",
             (f"Stationarity parameters scaled to {total} steps" if run["length"] == total else
              "Stationarity parameters: the study's, unscaled") + f": smooth / window / every = {scaled} (the "
             "original's FFN series: not smoothed).", ""]
    header = ["block", "ratio", "detector", "paper", "original", "Δ", "original's number",
              *(f"+ {label}" for label in run["rules"]), "notebook-literal"]
    lines += ["| " + " | ".join(header) + " |", "|---|---|---|" + "---:|" * (len(header) - 3)]
    for row in run["rows"]:
        rules = [f"{_fmt(row['rules'][label])} ({_delta(row['rules'][label], row['paper'])})"
                 if label in row["rules"] else "·" for label in run["rules"]]
        lines.append("| " + " | ".join([
            row["block"].upper(), f"{row['ratio']:.0%}", row["method"], _fmt(row["paper"]), _fmt(row["original"]),
            _delta(row["original"], row["paper"]), _fmt(row["index"]), *rules,
            _fmt(row["literal"]) + ("" if row["literal"] == row["original"] else " ≠")]) + " |")
    return "\n".join(lines)


def _effect(pairs, reference: str = "paper") -> str:
    """'c of n: Δ a .. b' for (draw, reference draw) pairs."""
    changed = [(step, paper) for step, paper in pairs if step != paper]
    if not pairs:
        return "·"
    deltas = sorted(step - paper for step, paper in changed if step is not None and paper is not None)
    lost = sum(step is None for step, _ in changed)
    gained = sum(paper is None for _, paper in changed)
    text = f"{len(changed)} of {len(pairs)}"
    if deltas:
        text += f": Δ {deltas[0]:+d}" + (f" .. {deltas[-1]:+d}" if len(deltas) > 1 else "")
    notes = [f"{lost} no longer drawn"] * bool(lost) + [f"{gained} drawn where {reference} never draws"] * bool(gained)
    return text + (f" ({', '.join(notes)})" if notes else "")


def _title(run: dict) -> str:
    return f"{run['total']}-step run" + ("" if run["length"] == run["total"] else ", the study's values")


def summary(runs: list[dict], link: bool = True) -> str:
    """One row per rule: over each run's (block, ratio, detector) draws, how many it changes and by how much."""
    header = ["rule switched on over `paper`"] + [_title(run) for run in runs]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for label in runs[0]["rules"]:
        lines.append("| " + " | ".join([label] + [_effect([(row["rules"][label], row["paper"]) for row in run["rows"]
                                                            if label in row["rules"]]) for run in runs]) + " |")
    lines.append("| " + " | ".join(["all (the `original` profile)"] + [
        _effect([(row["original"], row["paper"]) for row in run["rows"]]) for run in runs]) + " |")
    lines.append("| " + " | ".join(["notebook-literal vs `original`"] + [
        _effect([(row["literal"], row["original"]) for row in run["rows"]], "original") for run in runs]) + " |")
    return ("Draws changed (of the MSA/MLP x ratio 0.3/0.8 x detector draws that the rule applies to) and the "
            "range of the change in training steps"
            + ("; detail in [profile_differences.md](profile_differences.md)" if link else "") + ".\n\n"
            + "\n".join(lines))


def pruned_counts() -> str:
    """How many entries of a layer each rule prunes, on distinct coefficients (the rules' arithmetic)."""
    lines = ["| entries per layer | ratio | paper: round(r·n), at most n−1 | original: floor(r·(n−1)) + 1 |",
             "|---:|---:|---:|---:|"]
    for n in (4, 12, 128, 3072):
        coefs = np.linspace(0.5, 1.5, n, dtype=np.float32)[None]
        for ratio in RATIOS:
            lines.append(f"| {n} | {ratio:g} | {int((~compute_mask(coefs, ratio)).sum())} | "
                         f"{int((~compute_mask(coefs, ratio, rule='quantile')).sum())} |")
    return "\n".join(lines)


LEGEND = """\
Columns: **paper** / **original** — the draw step under each profile (training steps); **Δ** = original − paper;
**original's number** — what the original code prints for that draw (a 0-based record index for Hamming, an index
into the norm series for the stationarity tests, `draw_index`). **+ rule** — the paper profile with that one rule of
the original switched on (· where the rule does not apply), with its Δ from the paper's draw:

- *quantile masks* — signed coefficients, numpy's quantile as the threshold, every entry `<=` it pruned;
- *MLP global* — the original's default scope for the FFN masks (one threshold over all layers);
- *ε inclusive* — Hamming draws when the distance is `<=` ε (not `<`);
- *α 0.1* — the notebooks' thresholds for the slope and Mann-Kendall p-values (ADF keeps 0.05);
- *OLS* — the slope's plain OLS p-value instead of HAC;
- *windows* — the original's series (first and last records dropped) and windows ('valid' moving average, the
  first window W + S − 1 norms, later ones W − 1: 499 and 299 with the study's values; the FFN series not
  smoothed; decided at the record where the original's loop tests them), with the paper's tests and thresholds.

**notebook-literal** — the original profile computed as the notebooks literally do it, with SVD nuclear norms
(`numpy.linalg.norm`, whose last bits differ between masks of equal norm) and statsmodels' OLS on flat windows
(rounding noise instead of no p-value); `≠` marks a draw that differs from the `original` column.
"""


def document(runs: list[dict]) -> str:
    parts = ["# The `paper` and `original` detection profiles: differences measured",
             "", f"Generated by `tools/profile_differences.py {' '.join(run['path'] for run in runs)}`; see "
             "docs/library.md (\"Detection profiles\") for the rules.", "",
             "## Entries pruned per layer by each mask rule", "", pruned_counts(), "",
             "## Summary", "", summary(runs, link=False), "", "## Draw steps", "", LEGEND]
    for run in runs:
        parts += [run_table(run), ""]
    return "\n".join(parts) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="slimming run directories (or their records)")
    parser.add_argument("--study-values", nargs="*", default=[], metavar="RUN",
                        help="runs (among RUN) measured a second time with the study's unscaled step-counted "
                             "parameters (200 / 300 / 100): for runs long enough to test them")
    parser.add_argument("-o", "--output", type=Path, help="markdown file to write (default: print)")
    parser.add_argument("--write", type=Path, help="markdown file whose marked summary table to replace "
                                                   "(docs/library.md)")
    args = parser.parse_args(argv)
    started = time.time()
    runs = [measure(path) for path in args.runs] + [measure(path, study_values=True) for path in args.study_values]
    text = document(runs)
    if args.output:
        args.output.write_text(text)
    else:
        print(text)
    if args.write and not replace_marked(args.write, MARKER, summary(runs)):
        print(f"{args.write}: no <!-- {MARKER}:start --> ... <!-- {MARKER}:end --> markers", file=sys.stderr)
        return 2
    print(f"({math.ceil(time.time() - started)} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
