"""Evidence over seeds: the summary's numbers are the seeds' numbers (mean, sd, regret, FLOPs until the draw)."""

import json
import statistics
from pathlib import Path

import pytest

from earlybird.errors import EarlyBirdError
from earlybird.study import load_seed, summarize


def make_study(root, seed, tickets, draws, dense, flops_per_step=1e9, total=100):
    """A seed's study directory as reproduce writes it: runs/<name>/results.json (+ plan.json), draws.json."""
    study = root / f"seed-{seed}"
    runs = study / "runs"

    def run(name, kind, accuracy, provenance=None, **results):
        path = runs / name
        path.mkdir(parents=True)
        (path / "results.json").write_text(json.dumps({"kind": kind, "accuracy": accuracy, **results}))
        if provenance is not None:
            (path / "plan.json").write_text(json.dumps({"provenance": provenance}))

    run("slim", "slim", 0.9, step=total, train_flops=flops_per_step * total)
    run("dense", "dense", dense)
    for (step, ratio), accuracy in tickets.items():
        run(f"ticket-s{step}-r{int(ratio * 100)}", "ticket", accuracy,
            {"step": step, "self_ratio": ratio, "inter_ratio": ratio})
    fixed = {"0.1": 10, "0.5": 50}
    (study / "draws.json").write_text(json.dumps({**{f"{m}@{r}": s for (m, r), s in draws.items()},
                                                  "total_steps": total, "fixed": fixed}))
    return study


def test_summary_is_computed_from_the_seeds(tmp_path):
    a = make_study(tmp_path, 1, {(10, 0.3): 0.70, (50, 0.3): 0.80, (20, 0.3): 0.75},
                   {("slope", 0.3): 20, ("hamming", 0.3): 10}, dense=0.85)
    b = make_study(tmp_path, 2, {(10, 0.3): 0.72, (50, 0.3): 0.76, (30, 0.3): 0.79},
                   {("slope", 0.3): 30, ("hamming", 0.3): None}, dense=0.83)
    seed = load_seed(a)
    assert seed.tickets[(20, 0.3)] == 0.75 and seed.dense == 0.85 and seed.flops_per_step == 1e9
    text = summarize([a, b], tmp_path / "out", log=lambda _: None).read_text()
    # fixed fractions: mean ± sd over seeds
    assert f"| 10% | {100 * statistics.fmean([0.70, 0.72]):.1f} ± {100 * statistics.stdev([0.70, 0.72]):.1f} |" in text
    # slope drew at 20 and 30 (20% and 30%); tickets 75 and 79; regret = best fixed (80, 76) - ticket = 5, -3
    regret = f"{statistics.fmean([5.0, -3.0]):.1f} ± {statistics.stdev([5.0, -3.0]):.1f}"
    assert (f"| paper | slope | 30% | 2/2 | 25.0 ± 7.1 | 20, 30 | 77.0 ± 2.8 | {regret} | {2.5e10:.3g} |"
            in text)
    assert "| paper | hamming | 30% | 1/2 | 10.0 | 10, — | 70.0 | 10.0 |" in text
    assert (tmp_path / "out" / "study_accuracy.png").stat().st_size > 5000


def test_a_directory_that_is_not_a_study_is_refused(tmp_path):
    with pytest.raises(EarlyBirdError, match="draws.json"):
        load_seed(tmp_path)


def test_the_cli_writes_the_summary_and_refuses_bad_input(tmp_path, capsys):
    from earlybird.cli import main

    a = make_study(tmp_path, 1, {(10, 0.3): 0.70, (50, 0.3): 0.80}, {("slope", 0.3): 50}, dense=0.85)
    assert main(["study", str(a), "-o", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "summary.md").exists()
    assert main(["study", str(tmp_path / "nothing"), "-o", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("earlybird: error:") and "draws.json" in err[-1]


def test_the_figure_gives_the_dense_line_a_colour_no_detector_has(tmp_path, monkeypatch):
    """Three detectors used to take matplotlib's C0, C1, C2 -- and C2 is the dense line's green. Detectors take the
    report's styles (a colour each), the dense line is grey."""
    from matplotlib.colors import to_rgba
    from matplotlib.figure import Figure

    from earlybird.report import detector_styles

    saved, savefig = {}, Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, path, **kw: (saved.setdefault(Path(path).name, fig),
                                                                    savefig(fig, path, **kw))[1])
    draws = {("hamming", 0.3): 10, ("mk", 0.3): 20, ("slope", 0.3): 50}
    tickets = {(10, 0.3): 0.70, (20, 0.3): 0.74, (50, 0.3): 0.80}
    studies = [make_study(tmp_path, seed, tickets, draws, dense=0.85 + 0.01 * seed) for seed in (1, 2)]
    summarize(studies, tmp_path / "out", log=lambda _: None)
    (ax,) = saved["study_accuracy.png"].axes
    dense = [line for line in ax.get_lines() if line.get_label().startswith("dense")]
    assert len(dense) == 1
    styles = detector_styles()
    for container in ax.containers:  # one errorbar per detector, plus the tickets' curve
        method = container.get_label().split(" ")[0]
        if method in styles:
            colour = to_rgba(container.lines[0].get_color())
            assert colour == to_rgba(styles[method].color) and colour != to_rgba(dense[0].get_color())
    assert {c.get_label() for c in ax.containers} >= {"hamming (paper)", "mk (paper)", "slope (paper)"}
