"""earlybird report: figures and tables from records and run directories; every number from the files."""

import json
import re
from types import SimpleNamespace

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from earlybird import report as report_module
from earlybird.cli import main as cli_main
from earlybird.detectors import DETECTORS, detect, detect_many, hamming_table, scaled_params
from earlybird.detectors import smooth_series as moving_average
from earlybird.records import CoefficientRecorder
from earlybird.report import build_report, detector_styles, figure_annotations, mask_series, plot_coefficients
from earlybird.masks import compute_mask, hamming_distance, nuclear_norm
from earlybird.records import load_records
from earlybird.synthetic import synthetic_coefficients

STEPS = 600


@pytest.fixture(scope="module")
def slim_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("runs") / "slim"
    msa = synthetic_coefficients(0, layers=3, heads=6, steps=STEPS, plateau=300)
    mlp = synthetic_coefficients(1, layers=3, heads=20, steps=STEPS, plateau=350)
    with CoefficientRecorder(run / "records", chunk=100, meta={"model_type": "vit"}) as recorder:
        for t in range(STEPS):
            recorder.record(t + 1, msa=msa[t], mlp=mlp[t])
    (run / "args.json").write_text(json.dumps({"self_slimming": True, "inter_slimming": True}))
    (run / "results.json").write_text(json.dumps({"kind": "slim", "accuracy": 0.9, "step": STEPS,
                                                  "train_flops": 6.0e9}))
    return run


def make_run(root, name, kind, results, provenance=None, ebtrain=None):
    """A finished run as the training loop leaves it: results.json with its kind, plan.json, ebtrain.json."""
    path = root / name
    path.mkdir()
    (path / "results.json").write_text(json.dumps({"kind": kind, **results}))
    if provenance is not None:
        (path / "plan.json").write_text(json.dumps({"provenance": provenance}))
    if ebtrain is not None:
        (path / "ebtrain.json").write_text(json.dumps(ebtrain))
    return path


def test_mask_series_matches_the_mask_function(slim_run):
    records = load_records(slim_run / "records")
    series = mask_series(records, "mlp", 0.3)
    masks = compute_mask(records.mlp, 0.3, "layerwise")
    np.testing.assert_allclose(series["distance"], hamming_distance(masks[1:], masks[:-1]))
    np.testing.assert_allclose(series["norm"], nuclear_norm(masks))
    values = np.array([1.0, 2.0, 6.0, 3.0])
    np.testing.assert_allclose(moving_average(values, 2), [1.0, 1.5, 4.0, 4.5])


PAPER_STATIONARITY = {"smooth": 200, "window": 300, "every": 100}  # the study's text


def stationarity_params(total, scale=True):
    return scaled_params("slope", total, scale)


def test_stationarity_parameters_scale_down_never_up():
    assert stationarity_params(14774) == (PAPER_STATIONARITY, 1.0)
    assert stationarity_params(30000)[0] == PAPER_STATIONARITY
    params, factor = stationarity_params(1477)
    assert factor == pytest.approx(1477 / 14774) and params == {"smooth": 20, "window": 30, "every": 10}
    assert stationarity_params(1477, scale=False)[0] == PAPER_STATIONARITY
    assert all(scaled_params(m, 1477) == (params, factor) for m in ("mk", "adf"))
    assert scaled_params("hamming", 1477)[0] == {}  # nothing of the Hamming rule is counted in steps


def keep_figures(monkeypatch) -> dict:
    """The matplotlib figures as `_save` writes them, by file name (drawn: offsets and legend positions are final)."""
    saved, save = {}, report_module._save

    def keep(fig, path, annotations):
        saved[path.name] = fig
        return save(fig, path, annotations)

    monkeypatch.setattr(report_module, "_save", keep)
    return saved


@pytest.fixture(scope="module")
def full_report(slim_run, tmp_path_factory):
    """The report over the slimming run, its tickets, a dense, a random and an EB-Train run; its figures as saved."""
    root = tmp_path_factory.mktemp("report")
    runs = root / "runs"
    runs.mkdir()
    tickets = {}
    for i, (step, ratio) in enumerate([(24, 0.3), (120, 0.3), (24, 0.8), (120, 0.8)]):
        accuracy = 0.5 + 0.01 * i
        tickets[(step, ratio)] = accuracy
        make_run(runs, f"ticket-{step}-{ratio}", "ticket", {"accuracy": accuracy},
                 {"records": str(slim_run / "records"), "step": step, "self_ratio": ratio, "inter_ratio": ratio})
    make_run(runs, "dense", "dense", {"accuracy": 0.777, "train_flops": 6.0e9, "train_wall_s": 10.0})
    make_run(runs, "random", "random", {"accuracy": 0.4242},
             {"records": "x", "step": 120, "self_ratio": 0.3, "inter_ratio": 0.3, "random_seed": 7})
    make_run(runs, "eb", "ebtrain", {"accuracy": 0.8123, "train_flops": 3.0e9, "train_wall_s": 4.0},
             ebtrain={"method": "slope", "draw_step": 150, "total_steps": STEPS, "flops": {"total": 3.0e9}})
    with pytest.MonkeyPatch.context() as monkeypatch:
        figures = keep_figures(monkeypatch)
        report = build_report([slim_run, *sorted(runs.iterdir())], root / "out", log=lambda _: None)
    return SimpleNamespace(out=root / "out", text=report.read_text(), tickets=tickets, figures=figures)


def test_report_numbers_come_from_the_runs(slim_run, full_report):
    text = full_report.text
    for png in ["hamming_distances.png", "coefficients.png", "pvalues_msa_30.png", "pvalues_mlp_80.png",
                "nuclear_norm_msa_30.png", "tickets.png"]:
        assert (full_report.out / png).stat().st_size > 5000
        assert f"]({png})" in text
    # Hamming table: the library's numbers
    table = hamming_table(slim_run / "records", "msa", (0.3, 0.8), (5, 50, 100, 500, 2000), (0.1, 0.01))
    row5 = "| 5 | " + " | ".join("never" if table[(r, 5, t)] is None else str(table[(r, 5, t)])
                                 for r in (0.3, 0.8) for t in (0.1, 0.01)) + " |"
    assert row5 in text
    # Ticket table: accuracy of each ticket, at its step and ratio; dense reference; random baseline
    assert "| 4.0% | 24 | 50.0 | 52.0 |" in text and "| 20.0% | 120 | 51.0 | 53.0 |" in text
    assert "Dense reference: accuracy **77.7**" in text
    assert "seed 7, step 120): accuracy 42.4" in text
    # Detector summary: the scaled stationarity detectors' draws, as detect() gives them
    params, _ = stationarity_params(STEPS)
    draw = detect(slim_run / "records", "msa", 0.3, "layerwise", "slope", **params).draw_step
    expected = "never" if draw is None else f"{draw} | {100 * draw / STEPS:.1f}%"
    assert f"| MSA | 30% | sliding-window regression (HAC p-value) | {expected} |" in text
    if draw is not None:
        assert f"{6.0e9 / STEPS * draw:.3g}" in text  # FLOPs until the draw, from the slimming run's results
    # EB-Train against dense: 2x fewer FLOPs, 2.5x less wall time
    assert "| `eb` | slope | 150 | 25.0% | 3e+09 | 2.00× | 4.0 | 2.50× | 81.2 |" in text


def summary_draws(text: str) -> dict:
    """{(block, ratio, detector title): draw step or None} from the report's detector summary table."""
    rows = re.findall(r"^\| (MSA|MLP) \| (\d+)% \| ([^|]+) \| (never|\d+) \|", text, flags=re.M)
    return {(block.lower(), int(ratio) / 100, title.strip()): None if step == "never" else int(step)
            for block, ratio, title, step in rows}


def test_figures_mark_the_draws_of_the_summary_table(slim_run, full_report):
    """Every draw a figure marks is the draw the detector summary lists, for the same block and ratio; Figure 5 marks
    the MSA draws on the tickets' accuracies; p-value figures tell constant windows apart from tested checks."""
    out, text = full_report.out, full_report.text
    table = summary_draws(text)
    titles = {m: cls(**scaled_params(m, STEPS)[0]).describe() for m, cls in DETECTORS.items()}
    assert len(table) == 2 * 2 * len(DETECTORS) and any(step is not None for step in table.values())

    def table_draws(block, ratio):
        return {m: table[(block, ratio, titles[m])] for m in DETECTORS}

    hamming = figure_annotations(out / "hamming_distances.png")
    assert {(p["block"], p["ratio"]) for p in hamming["panels"]} == {(b, r) for b in ("msa", "mlp") for r in (0.3, 0.8)}
    for panel in hamming["panels"]:
        assert panel["draws"] == table_draws(panel["block"], panel["ratio"])
        assert panel["epsilon"] == 0.1 and panel["cached"] == 5  # the Hamming rule's parameters, as detected
    for ratio in (0.3, 0.8):
        (norm,) = figure_annotations(out / f"nuclear_norm_msa_{int(ratio * 100)}.png")["panels"]
        assert norm["draws"] == table_draws("msa", ratio)
    tickets = figure_annotations(out / "tickets.png")["panels"]
    assert [tuple(p["ratios"]) for p in tickets] == [(0.3, 0.3), (0.8, 0.8)]
    for panel in tickets:
        ratio = panel["ratios"][0]
        assert panel["draws"] == table_draws("msa", ratio)
        assert panel["tickets"] == {str(s): pytest.approx(100 * a) for (s, r), a in full_report.tickets.items()
                                    if r == ratio}
        assert panel["dense"] == pytest.approx(77.7)
        assert panel.get("random", []) == ([[120, pytest.approx(42.42)]] if ratio == 0.3 else [])
    constant_seen = False
    for block in ("msa", "mlp"):
        for ratio in (0.3, 0.8):
            panels = figure_annotations(out / f"pvalues_{block}_{int(ratio * 100)}.png")["panels"]
            assert [p["method"] for p in panels] == [m for m, cls in DETECTORS.items() if cls.uses_norm]
            params = {p["method"]: scaled_params(p["method"], STEPS)[0] for p in panels}
            results = detect_many(slim_run / "records", block, ratio, "layerwise", params, stop_at_draw=False)
            for panel in panels:
                trace = results[panel["method"]].trace
                assert panel["draw"] == table[(block, ratio, titles[panel["method"]])]
                assert panel["constant"] == [e["step"] for e in trace if e["constant"]]
                assert panel["passes"] == [e["step"] for e in trace if e["passed"] and not e["constant"]]
                assert panel["fails"] == [e["step"] for e in trace if not e["passed"]]
                constant_seen |= bool(panel["constant"])
    assert constant_seen  # the fixture's masks freeze: some checks are decided on a constant window


def test_every_registered_detector_has_a_style_of_its_own(monkeypatch):
    monkeypatch.setitem(DETECTORS, "newcomer", object)
    styles = detector_styles()
    assert list(styles) == list(DETECTORS)
    assert len({(s.color, s.marker, s.linestyle) for s in styles.values()}) == len(DETECTORS)
    assert len({s.color for s in styles.values()}) == len(DETECTORS)  # up to 9 detectors: a colour each


def test_coefficient_panels_share_one_y_scale_per_block_without_offsets(tmp_path, monkeypatch):
    saved_figures = keep_figures(monkeypatch)
    steps = 50
    rng = np.random.default_rng(0)
    # values near 1 that differ in the fourth decimal: matplotlib would write them as an offset (+0.998) by default
    msa = 0.998 + 1e-4 * rng.random((steps, 2, 4)).cumsum(axis=0) / steps
    mlp = 0.5 + 0.1 * rng.random((steps, 2, 30))
    with CoefficientRecorder(tmp_path / "records", chunk=16) as recorder:
        for t in range(steps):
            recorder.record(t + 1, msa=msa[t], mlp=mlp[t])
    records = load_records(tmp_path / "records")
    path = plot_coefficients(records, 1, tmp_path / "coefficients.png")
    fig = saved_figures["coefficients.png"]
    panels = {p["block"]: p for p in figure_annotations(path)["panels"]}
    assert panels["msa"]["units"] == [0, 1, 2, 3]  # every head, in order
    final = np.argsort(-mlp[-1, 1], kind="stable")
    assert panels["mlp"]["units"][0] == final[0] and panels["mlp"]["units"][-1] == final[-1]  # both ends of the ranking
    assert len(panels["mlp"]["units"]) == 8
    for subfig, block, coefs in zip(fig.subfigs, ("msa", "mlp"), (msa, mlp)):
        axes = [ax for ax in subfig.axes if ax.has_data()]
        assert len(axes) == len(panels[block]["units"])
        limits = {ax.get_ylim() for ax in axes}
        assert len(limits) == 1  # one y-scale per block
        low, high = limits.pop()
        assert low <= coefs[:, 1].min() and high >= coefs[:, 1].max()
        assert [low, high] == pytest.approx(panels[block]["ylim"])
    assert all(axis.get_offset_text().get_text() == "" for ax in fig.axes for axis in (ax.xaxis, ax.yaxis))


def test_legends_are_outside_the_axes(full_report):
    saved_figures = full_report.figures
    assert {"hamming_distances.png", "nuclear_norm_msa_30.png", "pvalues_msa_30.png", "tickets.png"} <= set(saved_figures)
    for name, fig in saved_figures.items():
        canvas = FigureCanvasAgg(fig)  # the figure was closed: draw it again, as saved
        canvas.draw()
        renderer = canvas.get_renderer()
        legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
        for legend in legends:
            box = legend.get_window_extent(renderer)
            for ax in fig.axes:
                assert not box.overlaps(ax.get_window_extent(renderer)), (name, legend)


def test_report_on_the_original_layout(tmp_path):
    msa = synthetic_coefficients(2, layers=2, heads=4, steps=200, plateau=100)
    np.save(tmp_path / "self_slimming_coef_records.npy", msa.transpose(1, 0, 2))  # layer-major (L, T, H)
    report = build_report([tmp_path], tmp_path / "out", ratios=(0.5,), log=lambda _: None)
    assert "Records: 200 steps (steps 0..199), blocks msa, 2 layers" in report.read_text()


def test_report_cli_bad_input(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("earlybird: error:") and "missing" in err[0]


def records_until(path, msa, mlp, last, meta=None):
    with CoefficientRecorder(path, chunk=64, meta=meta) as recorder:
        for t in range(last):
            recorder.record(t + 1, msa=msa[t], mlp=mlp[t])
    return path


def test_report_on_an_ebtrain_run_takes_its_length_and_flops_from_the_run(tmp_path):
    """EB-Train's records stop at its draw (step D of 200): the report's lengths are the run's 200 steps (the draw is
    at D/200, the stationarity parameters are scaled to 200 as EB-Train's --eb-scale did), and FLOPs until the draw
    come from the run's own accounting (its FLOPs before the draw), not from its total scaled by steps."""
    budget = 200
    msa = synthetic_coefficients(4, layers=2, heads=6, steps=budget, plateau=40)
    mlp = synthetic_coefficients(5, layers=2, heads=16, steps=budget, plateau=40)
    full = records_until(tmp_path / "full", msa, mlp, budget)
    params = scaled_params("slope", budget)[0]
    draw = detect(full, "msa", 0.3, "layerwise", "slope", **params).draw_step
    assert draw is not None and draw < budget
    run = tmp_path / "eb"
    records_until(run / "records", msa, mlp, draw)
    before, after = 4.0e10, 7.1e10  # the pruned steps after the draw are cheaper: total / budget * draw is 3.0e10
    (run / "args.json").write_text("{}")
    (run / "results.json").write_text(json.dumps({"kind": "ebtrain", "step": budget, "accuracy": 0.8,
                                                  "train_flops": before + after}))
    (run / "ebtrain.json").write_text(json.dumps({"method": "slope", "draw_step": draw, "total_steps": budget,
                                                  "flops": {"before_draw": before, "after_draw": after,
                                                            "total": before + after}}))
    text = build_report([run], tmp_path / "out", ratios=(0.3,), log=lambda _: None).read_text()
    assert "Run: EB-Train" in text and f"{budget} training steps" in text and f"records end at step {draw}" in text
    row = re.search(r"^\| MSA \| 30% \| sliding-window regression \(HAC p-value\) \| (\d+) \| ([\d.]+)% \| [^|]+ \| "
                    r"([^|]+) \|", text, flags=re.M)
    assert row.groups() == (str(draw), f"{100 * draw / budget:.1f}", "4e+10")
    assert f"scaled by {budget / 14774:.4f} = {budget} / 14774 steps" in text
    for png in (tmp_path / "out").glob("*.png"):  # every figure spans the run, not the records
        assert png.stat().st_size > 5000


@pytest.fixture(scope="module")
def one_ratio_report(slim_run, tmp_path_factory):
    """One ratio; tickets rewound to init and tickets trained on from the pruning step (--rewind none); no dense
    run, no random baseline."""
    root = tmp_path_factory.mktemp("one-ratio")
    runs = root / "runs"
    runs.mkdir()
    accuracy = {}
    for i, step in enumerate((24, 120, 300)):
        for rewind, bonus in (("init", 0.0), ("none", 0.1)):
            path = make_run(runs, f"ticket-{step}-{rewind}", "ticket", {"accuracy": 0.5 + 0.01 * i + bonus},
                            {"records": str(slim_run / "records"), "step": step, "self_ratio": 0.3, "inter_ratio": 0.3})
            (path / "args.json").write_text(json.dumps({"rewind": rewind}))
            accuracy[(step, rewind)] = 100 * (0.5 + 0.01 * i + bonus)
    with pytest.MonkeyPatch.context() as monkeypatch:
        figures = keep_figures(monkeypatch)
        report = build_report([slim_run, *sorted(runs.iterdir())], root / "out", ratios=(0.3,), log=lambda _: None)
    return SimpleNamespace(out=root / "out", text=report.read_text(), figures=figures, accuracy=accuracy)


def drawn(fig):
    canvas = FigureCanvasAgg(fig)  # the figure was closed: draw it again, as saved
    canvas.draw()
    return canvas.get_renderer()


def test_every_figure_fits_its_canvas(full_report, one_ratio_report):
    """Titles and legends are wrapped / laid out to the figure's width: nothing is cut off (one ratio panel too)."""
    for figures in (full_report.figures, one_ratio_report.figures):
        for name, fig in figures.items():
            renderer = drawn(fig)
            box, canvas = fig.get_tightbbox(renderer), fig.bbox_inches
            assert (box.x0 >= -0.01 and box.y0 >= -0.01 and box.x1 <= canvas.x1 + 0.01
                    and box.y1 <= canvas.y1 + 0.01), (name, box, canvas)


def legend_labels(fig) -> list:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def test_the_tickets_legend_lists_only_what_is_drawn_and_rewinds_are_separate_curves(one_ratio_report, full_report):
    fig = one_ratio_report.figures["tickets.png"]
    labels = legend_labels(fig)
    assert not any(label.startswith(("dense", "random")) for label in labels)  # neither is drawn
    assert "ticket rewound to the initial weights (--rewind init)" in labels
    assert "ticket trained on from its pruning step's weights (--rewind none)" in labels
    ax = next(ax for ax in fig.axes if ax.get_ylabel())
    curves = {line.get_marker(): (list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()
              if line.get_marker() in ("o", "s")}  # init: circles, none: squares
    acc = one_ratio_report.accuracy
    for marker, rewind in (("o", "init"), ("s", "none")):
        assert curves[marker] == ([24, 120, 300], pytest.approx([acc[(s, rewind)] for s in (24, 120, 300)]))
    (panel,) = figure_annotations(one_ratio_report.out / "tickets.png")["panels"]
    assert panel["tickets"] == {str(s): pytest.approx(acc[(s, "init")]) for s in (24, 120, 300)}
    assert panel["tickets_rewind_none"] == {str(s): pytest.approx(acc[(s, "none")]) for s in (24, 120, 300)}
    # the table: a column for each
    assert "| % of steps | pruning step | 30% (rewound to init) | 30% (from the pruning step) |" in one_ratio_report.text
    assert f"| 20.0% | 120 | {acc[(120, 'init')]:.1f} | {acc[(120, 'none')]:.1f} |" in one_ratio_report.text
    # with a dense run and a random baseline drawn, both are listed
    full = legend_labels(full_report.figures["tickets.png"])
    assert any(label.startswith("dense model") for label in full) and "random pruning (same counts)" in full


def test_a_draw_at_the_last_step_is_inside_the_axes(tmp_path, monkeypatch):
    from earlybird.detectors import DetectionResult
    from earlybird.report import plot_pvalues

    figures = keep_figures(monkeypatch)
    trace = [{"step": s, "p_value": p, "passed": p > 0.2, "constant": False, "statistic": 0.0}
             for s, p in zip(range(100, 601, 50), np.linspace(0.01, 0.5, 11))]
    results = {"slope": DetectionResult("slope", 600, 600, trace, {"alpha": 0.2})}
    plot_pvalues(results, {"slope": "slope"}, 600, tmp_path / "p.png", "a draw at the last step")
    fig = figures["p.png"]
    renderer = drawn(fig)
    (ax,) = fig.axes
    low, high = ax.get_xlim()
    assert low < 100 and high > 600
    # the draw's line and the last check's marker lie whole inside the axes (not on its frame)
    frame = ax.get_window_extent(renderer)
    x_draw = ax.transData.transform((600, 0.5))[0]
    assert frame.x0 + 4 < x_draw < frame.x1 - 4
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert not any("constant window" in label for label in labels)  # no check was decided on a constant window
