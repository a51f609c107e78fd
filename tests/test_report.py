"""earlybird report: figures and tables from records and run directories; every number from the files."""

import json

import numpy as np
import pytest

from earlybird.cli import main as cli_main
from earlybird.detectors import detect, hamming_table, scaled_params
from earlybird.detectors import smooth_series as moving_average
from earlybird.records import CoefficientRecorder
from earlybird.report import build_report, mask_series
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


def test_report_numbers_come_from_the_runs(slim_run, tmp_path):
    runs = tmp_path / "runs"
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
    report = build_report([slim_run, *sorted(runs.iterdir())], tmp_path / "out", log=lambda _: None)
    text = report.read_text()
    for png in ["hamming_distances.png", "coefficients.png", "pvalues_msa_30.png", "pvalues_mlp_80.png",
                "nuclear_norm_msa_30.png"]:
        assert (tmp_path / "out" / png).stat().st_size > 5000
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


def test_report_on_the_original_layout(tmp_path):
    msa = synthetic_coefficients(2, layers=2, heads=4, steps=200, plateau=100)
    np.save(tmp_path / "self_slimming_coef_records.npy", msa.transpose(1, 0, 2))  # layer-major (L, T, H)
    report = build_report([tmp_path], tmp_path / "out", ratios=(0.5,), log=lambda _: None)
    assert "Records: 200 steps (steps 0..199), blocks msa, 2 layers" in report.read_text()


def test_report_cli_bad_input(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("earlybird: error:") and "missing" in err[0]
