"""Measure detectors' false-positive rate and delay on synthetic trajectories; print a markdown table.

    .venv/bin/python tools/synthetic_fpr_table.py                      # print
    .venv/bin/python tools/synthetic_fpr_table.py --write docs/library.md  # replace the marked table

The trajectories and the measurement are earlybird.synthetic's (the same as
tests/test_synthetic_fpr.py): 12 layers x 12 heads, 3000 steps, plateau at step 1500.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from earlybird.fileio import replace_marked
from earlybird.synthetic import DEFAULT_DETECTORS, measure_detectors

MARKER = "synthetic-fpr"  # the table's place in docs/library.md

DETECTORS = {
    **DEFAULT_DETECTORS,
    "hamming (N=100, eps=0.01)": ("hamming", {"cached": 100, "threshold": 0.01}),
    "slope (patience 3)": ("slope", {"patience": 3}),
    "mk (patience 3)": ("mk", {"patience": 3}),
    "adf (patience 3)": ("adf", {"patience": 3}),
}


def table(seeds: int, ratios) -> str:
    lines = [f"{seeds} seeds per ratio; 12 layers x 12 heads, 3000 steps, plateau at step 1500; layerwise masks.",
             "A false positive is a draw before the plateau; delay = draw step - 1500 (median over runs that drew).",
             "",
             "| detector | ratio | false-positive rate | drew | median delay |",
             "|---|---:|---:|---:|---:|"]
    for ratio in ratios:
        summary = measure_detectors(range(seeds), ratio=ratio, detectors=DETECTORS)
        for label, result in summary.items():
            delay = "n/a" if result["median_delay"] is None else f"{result['median_delay']:+.0f}"
            lines.append(f"| {label} | {ratio:g} | {result['false_positive_rate']:.2f} | "
                         f"{result['draw_rate']:.2f} | {delay} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.8])
    parser.add_argument("--write", type=Path, help="markdown file whose marked table to replace")
    args = parser.parse_args(argv)
    started = time.time()
    text = table(args.seeds, args.ratios)
    print(text)
    print(f"\n({time.time() - started:.0f} s)", file=sys.stderr)
    if args.write and not replace_marked(args.write, MARKER, text):
        print(f"{args.write}: no <!-- {MARKER}:start --> ... <!-- {MARKER}:end --> markers", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
