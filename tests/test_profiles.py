"""The `original` detection profile (the original research code's rules) beside the default `paper` one: each rule
by hand, p-values against direct statsmodels / pymannkendall calls, offline == online, and the profile recorded
wherever detector parameters are written."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pymannkendall
import pytest
import statsmodels.api as sm
import torch
from statsmodels.tsa.stattools import adfuller

from earlybird.cli import main as cli_main
from earlybird.detectors import (OnlineEarlyBird, OriginalMannKendallEB, OriginalSlopeEB, SlopeEB, default_maxlags,
                                 detect, detect_many, hamming_table, make_detector, scaled_params)
from earlybird.errors import EarlyBirdError
from earlybird.masks import compute_mask, nuclear_norm
from earlybird.plans import make_plan, save_plan
from earlybird.profiles import get_profile
from earlybird.records import CoefficientRecorder, Records
from earlybird.report import build_report
from earlybird.synthetic import synthetic_coefficients
from earlybird.training import args as targs
from earlybird.training.config import EBConfig, PruningConfig, TrainConfig
from earlybird.training.ebtrain import EBTrain

SMALL = {"smooth": 20, "window": 40, "every": 10}  # the study's 200 / 300 / 100, shrunk for a 300-record run


def row(*values):
    return np.array([values], dtype=np.float32)


# --------------------------------------------------------------------------- masks


def test_quantile_rule_prunes_every_tie_at_the_threshold():
    coefs = row(0.5, 0.2, 0.2, 0.9, 0.2)
    # sorted 0.2 0.2 0.2 0.5 0.9; position 0.5 * 4 = 2 -> threshold 0.2: all three 0.2s go
    assert compute_mask(coefs, 0.5, rule="quantile").tolist() == [[True, False, False, True, False]]
    # the paper: round(2.5) = 2 pruned, the lowest indices among the ties first
    assert compute_mask(coefs, 0.5).tolist() == [[True, False, False, True, True]]


def test_quantile_rule_counts_and_signs():
    heads = row(*np.random.default_rng(0).permutation(12) + 1.0)
    # distinct values: floor(0.8 * 11) + 1 = 9 heads go, the paper's round(0.8 * 12) = 10
    assert (~compute_mask(heads, 0.8, rule="quantile")).sum() == 9
    assert (~compute_mask(heads, 0.8)).sum() == 10
    assert (~compute_mask(heads, 0.3, rule="quantile")).sum() == (~compute_mask(heads, 0.3)).sum() == 4
    # signed: -1 is the least important under the quantile rule, the most important but one under |coefficient|
    signed = row(-1.0, 0.1, 0.5, -0.2)
    assert compute_mask(signed, 0.5, rule="quantile").tolist() == [[False, True, True, False]]
    assert compute_mask(signed, 0.5).tolist() == [[True, False, True, False]]
    # ratio 0 keeps everything under both rules
    assert compute_mask(signed, 0.0, rule="quantile").all()


def test_quantile_rule_global_prunes_whole_layers():
    coefs = np.array([[0.1, 0.2], [0.8, 0.9]], dtype=np.float32)
    # one threshold over all four entries: quantile 0.5 = 0.5, so layer 0 goes whole (no layer is protected)
    assert compute_mask(coefs, 0.5, "global", rule="quantile").tolist() == [[False, False], [True, True]]
    assert compute_mask(coefs, 0.5, "global").tolist() == [[False, True], [False, True]]


@pytest.mark.parametrize("scope, axis", [("layerwise", -1), ("global", None)])
def test_quantile_rule_is_numpy_quantile_step_by_step(scope, axis):
    batch = np.random.default_rng(1).normal(1.0, 0.1, (30, 3, 7)).astype(np.float32)
    batch[5] = 1.0  # a step of equal coefficients: everything pruned
    for ratio in (0.3, 0.8, 0.55):
        expected = np.stack([step > np.quantile(step, ratio, axis=axis, keepdims=True) for step in batch])
        np.testing.assert_array_equal(compute_mask(batch, ratio, scope, rule="quantile"), expected)
        np.testing.assert_array_equal(compute_mask(torch.from_numpy(batch), ratio, scope, rule="quantile"), expected)
    assert not compute_mask(batch, 0.3, scope, rule="quantile")[5].any()


def test_a_whole_layer_pruned_detects_but_refuses_to_prune(tmp_path, capsys):
    coefs = np.random.default_rng(2).normal(1.0, 0.05, (12, 2, 4)).astype(np.float32)
    coefs[:4] = 1.0  # the first steps: all coefficients equal (every entry <= the quantile)
    records = Records.from_arrays(msa=coefs, steps=np.arange(1, 13))
    result = detect(records, "msa", 0.5, method="hamming", profile="original", cached=3, threshold=0.0)
    assert result.draw_step == 3 and result.draw_index == 2  # three identical all-pruned masks: distance 0
    plan = make_plan(records, 2, 0.5, 0.0, profile="original")
    assert plan["pruned_heads"]["0"] == [0, 1, 2, 3]
    with pytest.raises(EarlyBirdError, match="prunes all 4 heads of layer 0"):
        save_plan(plan, tmp_path / "plan.json")
    np.save(tmp_path / "msa.npy", coefs)
    assert cli_main(["plan", str(tmp_path / "msa.npy"), "--step", "1", "--self-pruning-ratio", "0.5",
                     "--inter-pruning-ratio", "0", "--profile", "original", "-o", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "prunes all 4 heads of layer 0" in err
    assert not (tmp_path / "p.json").exists()


# --------------------------------------------------------------------------- Hamming


def bits(text):
    return np.array([[c == "1" for c in text]])


# Max distances once the FIFO of 3 is full (by hand, see test_detectors.py): 0.5, 0.2, 0.1, 0.6, 0.6
SEQUENCE = ["0000000000", "1111000000", "1111100000", "1111110000", "1111110000", "0000000000", "1111110000"]


def hamming_draw(profile, threshold, steps=range(10, 80, 10)):
    detector = make_detector("hamming", profile, cached=3, threshold=threshold)
    for step, text in zip(steps, SEQUENCE):
        detector.update(step, bits(text))
    return detector


def test_hamming_threshold_is_inclusive_and_reports_the_record_index():
    original = hamming_draw("original", 0.1)
    assert original.draw_step == 50 and original.draw_index == 4  # the 5th record: distance 0.1 <= 0.1
    assert [e["index"] for e in original.trace] == [2, 3, 4, 5, 6]
    assert hamming_draw("paper", 0.1).draw_step is None  # 0.1 < 0.1 never holds
    assert hamming_draw("original", 0.0).draw_step is None  # no two masks of a full FIFO are all equal
    identical = make_detector("hamming", "original", cached=2, threshold=0.0)
    assert [identical.update(s, bits("1100")) for s in (5, 6)] == [False, True] and identical.draw_index == 1
    with pytest.raises(EarlyBirdError, match=r"threshold must be in \(0, 1\]"):
        make_detector("hamming", "paper", threshold=0.0)


def test_hamming_table_under_the_original_profile():
    steps = np.arange(100, 100 + len(SEQUENCE))
    records = Records.from_arrays(msa=np.stack([bits(t).astype(np.float32) for t in SEQUENCE]), steps=steps)
    # masks at ratio 0.5 of 0/1 coefficients: kept = 1s above the median
    table = hamming_table(records, ratios=(0.5,), cached=(3,), thresholds=(0.1, 0.0), profile="original",
                          indices=True)
    for eps in (0.1, 0.0):
        single = detect(records, "msa", 0.5, method="hamming", profile="original", cached=3, threshold=eps)
        assert table[(0.5, 3, eps)] == single.draw_index
        steps_table = hamming_table(records, ratios=(0.5,), cached=(3,), thresholds=(eps,), profile="original")
        assert steps_table[(0.5, 3, eps)] == single.draw_step


# --------------------------------------------------------------------------- windows


class CaptureMK(OriginalMannKendallEB):
    """The original windows, with the windows kept instead of tested."""

    def __init__(self, **params):
        super().__init__(**params)
        self.windows = []

    def test(self, window):
        self.windows.append(window.copy())
        return 0.0, 0.5


def feed_values(detector, values, step_of=lambda i: 10 * i):
    for i, value in enumerate(values):
        detector.update_value(step_of(i), value)
    return detector


def test_window_arithmetic_by_hand():
    values = np.arange(40, dtype=np.float64) ** 1.5  # record i's norm
    series = values[1:-1]  # without the first and the last record
    detector = feed_values(CaptureMK(smooth=4, window=14, every=5), values)
    # window 0 = norms [0, 17) -> 14 smoothed values; window k = norms [5k, 5k + 13) -> 10 values, while the end
    # (17, 18, 23, 28, 33, 38) is below the series' 38 values
    bounds = [(0, 17), (5, 18), (10, 23), (15, 28), (20, 33)]
    assert len(detector.windows) == len(bounds)
    for window, (start, stop) in zip(detector.windows, bounds):
        np.testing.assert_array_equal(window, np.convolve(series[start:stop], np.ones(4) / 4, mode="valid"))
    assert [len(w) for w in detector.windows] == [14, 10, 10, 10, 10]
    # reported (k + 1) * 5 + 13; decided at record max(17, end) + 2, i.e. steps 190, 200, 250, ...
    assert [e["index"] for e in detector.trace] == [18, 23, 28, 33, 38]
    assert [e["step"] for e in detector.trace] == [190, 200, 250, 300, 350]
    assert detector.draw_step == 190 and detector.draw_index == 18
    # one more record: window 5 (norms [25, 38)) is decided at the last record
    longer = feed_values(CaptureMK(smooth=4, window=14, every=5), np.arange(41, dtype=np.float64))
    assert [e["step"] for e in longer.trace][-1] == 400 and longer.trace[-1]["index"] == 43


def test_unsmoothed_windows():
    values = np.arange(30, dtype=np.float64) ** 2
    detector = feed_values(CaptureMK(smooth=0, window=12, every=5), values)
    # every window holds window - 1 = 11 raw norms: [0, 11), [5, 16), [10, 21), [15, 26) (end below 28)
    assert [w.tolist() for w in detector.windows] == [values[1 + a:1 + a + 11].tolist() for a in (0, 5, 10, 15)]
    assert [e["index"] for e in detector.trace] == [16, 21, 26, 31]
    assert [e["step"] for e in detector.trace] == [130, 180, 230, 280]
    assert make_detector("mk", "original", "mlp").smooth == 0  # the FFN series is not smoothed
    assert make_detector("mk", "original", "msa").smooth == 200


def test_the_study_values():
    detector = OriginalSlopeEB()
    assert (detector.smooth, detector.window, detector.every, detector.alpha) == (200, 300, 100, 0.1)
    # the first window: the first 499 norms (300 smoothed values), reported 399; then [100k, 100k + 299), 100k + 399
    assert [detector.bounds(k) for k in range(4)] == [(0, 499), (100, 399), (200, 499), (300, 599)]
    assert [detector.reported_index(k) for k in range(4)] == [399, 499, 599, 699]
    # windows 0, 1 and 2 are decided at record 501; window k >= 2 at record 100k + 301 = its number - 98
    assert [detector.due(k) for k in range(5)] == [501, 501, 501, 601, 701]
    assert [i for i in range(1200) if detector.checks_at(i, None, i)] == [501, 601, 701, 801, 901, 1001, 1101]
    assert make_detector("adf", "original").alpha == 0.05 and make_detector("mk", "original").alpha == 0.1
    with pytest.raises(EarlyBirdError, match="window >= smooth \\+ 10"):
        make_detector("slope", "original", smooth=200, window=205)


def test_ols_and_hac_differ():
    t = np.arange(300, dtype=np.float64)
    window = np.cos(2 * np.pi * t / 200)  # a slow oscillation: strongly autocorrelated residuals
    ols = sm.OLS(window, sm.add_constant(t)).fit().pvalues[1]
    hac = sm.OLS(window, sm.add_constant(t)).fit(cov_type="HAC", cov_kwds={"maxlags": default_maxlags(300)}).pvalues[1]
    original, paper = make_detector("slope", "original"), SlopeEB()
    assert original.test(window)[1] == pytest.approx(ols, rel=1e-12)
    assert paper.test(window)[1] == pytest.approx(hac, rel=1e-12)
    assert ols < 0.1 < 0.2 < hac  # plain OLS sees a trend, the serial-correlation-robust test does not
    assert not original.passes(original.test(window)[1]) and paper.passes(paper.test(window)[1])


@pytest.mark.parametrize("method, draws, p_value", [("slope", False, None), ("mk", True, 1.0), ("adf", True, 0.0)])
def test_constant_windows(method, draws, p_value):
    detector = feed_values(make_detector(method, "original", smooth=4, window=14, every=5), np.full(30, 3.0))
    first = detector.trace[0]
    assert first["constant"] and (detector.draw_step is not None) == draws
    if p_value is None:
        assert np.isnan(first["p_value"]) and first["statistic"] == 0.0  # OLS on a flat line: p = 0/0
        # what statsmodels' least squares returns instead: a rounding-noise slope with a p-value that would pass
        noise = sm.OLS(np.full(14, 3.0), sm.add_constant(np.arange(14.0))).fit()
        assert abs(noise.params[1]) < 1e-15 and 0.1 < noise.pvalues[1] < 1
    else:
        assert first["p_value"] == p_value
    if method == "adf":
        assert first["statistic"] is None  # adfuller raised: counted as p = 0
        with pytest.raises(ValueError, match="constant"):
            adfuller(np.full(14, 3.0), autolag="AIC", regression="c")
    paper = feed_values(make_detector(method, window=14, smooth=4, every=5), np.full(30, 3.0))
    assert paper.draw_step is not None  # the paper's rule: a constant window is stationary for every test


# --------------------------------------------------------------------------- p-values and offline == online


@pytest.fixture(scope="module")
def records():
    msa = synthetic_coefficients(4, layers=3, heads=6, steps=300, plateau=120)
    mlp = synthetic_coefficients(5, layers=3, heads=16, steps=300, plateau=120)
    return Records.from_arrays(msa=msa, mlp=mlp, steps=np.arange(1, 301))


def direct_p_values(coefs, ratio, axis, smooth, window, every):
    """The original's statistics, written from the profile's description with numpy / statsmodels / pymannkendall.

    The norms are earlybird's exact ones (test_masks checks them against numpy.linalg.norm): masks that differ by a
    permutation have bit-identical norms there, where an SVD's last bits differ and turn a flat window into noise.
    """
    masks = np.stack([c > np.quantile(c, ratio, axis=axis, keepdims=True) for c in coefs])
    norms = nuclear_norm(masks[1:-1])
    out, k = [], 0
    while True:
        start, stop = (0, window + smooth - 1) if k == 0 else (k * every, k * every + window - 1)
        if stop >= len(norms):
            return out
        y = norms[start:stop]
        y = np.convolve(y, np.ones(smooth) / smooth, mode="valid") if smooth else y
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # a constant window's p-value is 0/0 (NaN): statsmodels returns rounding noise there (test_constant_windows)
            slope = np.nan if y.min() == y.max() else sm.OLS(y, sm.add_constant(np.arange(len(y)))).fit().pvalues[1]
            try:
                adf = adfuller(y, autolag="AIC", regression="c")[1]
            except Exception:  # noqa: BLE001 - the rule being checked
                adf = 0.0
        out.append({"index": (k + 1) * every + window - 1, "slope": slope, "mk": pymannkendall.original_test(y).p,
                    "adf": adf})
        k += 1


@pytest.mark.parametrize("block, axis, smooth", [("msa", -1, 20), ("mlp", None, 0)])
def test_p_values_are_the_libraries(records, block, axis, smooth):
    params = {**SMALL, "smooth": smooth}
    expected = direct_p_values(records.block(block), 0.4, axis, **params)
    assert len(expected) > 10
    results = detect_many(records, block, 0.4, None, {m: params for m in ("slope", "mk", "adf")},
                          stop_at_draw=False, profile="original")
    for method, result in results.items():
        assert [e["index"] for e in result.trace] == [e["index"] for e in expected]
        np.testing.assert_allclose([e["p_value"] for e in result.trace], [e[method] for e in expected],
                                   rtol=1e-6, atol=1e-12)
        assert result.params["scope"] == ("layerwise" if block == "msa" else "global")
        assert result.params["profile"] == "original" and result.params["smooth"] == smooth


@pytest.mark.parametrize("method", ["hamming", "slope", "mk", "adf"])
def test_offline_equals_online(records, method):
    for block in ("msa", "mlp"):
        # the FFN keeps the profile's default smooth 0 (not smoothed)
        params = ({"cached": 4, "threshold": 0.05} if method == "hamming" else
                  {k: v for k, v in SMALL.items() if block == "msa" or k != "smooth"})
        offline = detect(records, block, 0.4, method=method, stop_at_draw=False, profile="original", **params)
        one = OnlineEarlyBird(block, 0.4, method=method, profile="original", **params)
        many = OnlineEarlyBird(block, 0.4, method=method, profile="original", **params)
        coefs = records.block(block)
        for i, step in enumerate(records.steps):
            one.observe(int(step), **{block: coefs[i]})
        for start in range(0, len(coefs), 7):
            many.observe_many(records.steps[start:start + 7], **{block: coefs[start:start + 7]})
        for online in (one, many):
            assert online.result().to_dict() == offline.to_dict()
        assert offline.draw_step is not None and offline.draw_index is not None


@pytest.mark.parametrize("method", ["hamming", "mk"])
def test_ebtrain_draws_where_offline_detection_does(records, method):
    # mk: the study's parameters scaled to 300 steps, per block (the FFN's windows stay unsmoothed)
    params = {"cached": 4, "threshold": 0.05} if method == "hamming" else {}
    eb = EBConfig(eb_method=method, eb_block="both", eb_profile="original", eb_scale=method == "mk", params=params)
    pruning = PruningConfig(self_pruning_ratio=0.4, inter_pruning_ratio=0.4, inter_pruning_scope="global")
    train = EBTrain(eb, pruning, total_steps=300)
    fed = []  # the steps at which the buffer went to the detector
    feed = train._feed
    train._feed = lambda: (fed.append(train._steps[-1]), feed())[1]
    for i, step in enumerate(records.steps):
        if train.observe(int(step), torch.from_numpy(np.array(records.msa[i])),
                         torch.from_numpy(np.array(records.mlp[i]))):
            break
    offline = {block: detect(records, block, 0.4, method=method, profile="original", **params,
                             **scaled_params(method, 300, method == "mk", "original", block)[0])
               for block in ("msa", "mlp")}
    assert train.draw_step == max(result.draw_step for result in offline.values())
    summary = train.summary()
    assert summary["profile"] == "original" and summary["scope"] == {"msa": "layerwise", "mlp": "global"}
    for block, result in offline.items():
        assert summary["detectors"][block]["params"] == result.params
    if method == "mk":  # fed only at the records where some block's window is decided
        assert summary["detectors"]["mlp"]["params"]["smooth"] == 0
        assert len(fed) < train.draw_step / 3 and all(train.detector.checks_at(s, None, s - 1) for s in fed)


# --------------------------------------------------------------------------- recorded everywhere


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, records):
    path = tmp_path_factory.mktemp("profiles") / "records"
    with CoefficientRecorder(path, chunk=64) as recorder:
        for i, step in enumerate(records.steps):
            recorder.record(int(step), torch.from_numpy(np.array(records.msa[i])),
                            torch.from_numpy(np.array(records.mlp[i])))
    return path


def cli_json(capsys, *argv):
    assert cli_main(["detect", *map(str, argv), "--json"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_cli_detect_reports_both_numbers(run_dir, capsys):
    small = [f"--{k}={v}" for k, v in SMALL.items()]
    original = cli_json(capsys, run_dir, "--ratio", "0.4", "--method", "slope,mk,adf", "--profile", "original", *small)
    paper = cli_json(capsys, run_dir, "--ratio", "0.4", "--method", "slope,mk,adf", *small)
    for o, p in zip(original, paper):
        expected = detect(run_dir, "msa", 0.4, method=o["method"], profile="original", **SMALL)
        assert (o["draw_step"], o["draw_index"]) == (expected.draw_step, expected.draw_index)
        assert o["params"]["profile"] == "original" and p["params"]["profile"] == "paper"
        assert "draw_index" not in p and list(p) == ["method", "draw_step", "total_steps", "params", "trace"]
    assert cli_main(["detect", str(run_dir), "--ratio", "0.4", "--method", "slope", "--maxlags", "2",
                     "--profile", "original"]) == 2
    assert "--maxlags does not apply to --method slope under profile original" in capsys.readouterr().err
    # the FFN under the original profile: global masks and no smoothing unless told
    mlp, = cli_json(capsys, run_dir, "--block", "mlp", "--ratio", "0.4", "--method", "mk", "--profile", "original",
                    "--window", "40", "--every", "10")
    assert mlp["params"]["scope"] == "global" and mlp["params"]["smooth"] == 0


def test_cli_hamming_table_prints_the_original_numbers(run_dir, capsys):
    argv = ["hamming-table", str(run_dir), "--ratios", "0.4", "--cached", "3", "6", "--thresholds", "0.05", "0",
            "--csv"]
    assert cli_main(argv + ["--profile", "original"]) == 0
    rows = capsys.readouterr().out.splitlines()
    table = hamming_table(run_dir, ratios=(0.4,), cached=(3, 6), thresholds=(0.05, 0.0), profile="original",
                          indices=True)
    assert rows[1:] == [f"{n},{table[(0.4, n, 0.05)] or ''},{table[(0.4, n, 0.0)] or ''}" for n in (3, 6)]
    assert cli_main(argv) == 2 and "--thresholds values must be in (0, 1]" in capsys.readouterr().err


def test_plan_and_training_flags_take_the_profile(run_dir, records):
    plan = make_plan(run_dir, 200, 0.4, 0.4, profile="original")
    assert plan["provenance"]["profile"] == "original" and plan["provenance"]["inter_scope"] == "global"
    assert [plan["pruned_heads"][str(layer)] for layer in range(3)] == [
        np.flatnonzero(c <= np.quantile(c, 0.4)).tolist() for c in records.msa[199]]
    assert make_plan(run_dir, 200, 0.4, 0.4)["provenance"]["profile"] == "paper"

    parser = targs.EntryParser(prog="prog", parents=[targs.common_parser()])
    base = ["--output-dir", "out", "--self-slimming", "--inter-slimming", "--self-pruning-ratio", "0.3"]
    config = TrainConfig.from_args(parser.parse_args(base + ["--eb-method", "mk", "--eb-profile", "original"]))
    assert config.pruning.scopes == {"msa": "layerwise", "mlp": "global"} and config.eb.eb_profile == "original"
    config = TrainConfig.from_args(parser.parse_args(base + ["--eb-method", "mk", "--eb-profile", "original",
                                                             "--inter-pruning-scope", "layerwise"]))
    assert config.pruning.scopes == {"msa": "layerwise", "mlp": "layerwise"}
    assert TrainConfig.from_args(parser.parse_args(base)).pruning.scopes == {"msa": "layerwise", "mlp": "layerwise"}
    for argv, message in ((["--eb-profile", "original"], "--eb-profile needs --eb-method"),
                          (["--eb-method", "slope", "--eb-profile", "original", "--eb-maxlags", "3"],
                           "--eb-maxlags does not apply to --eb-method slope under profile original")):
        with pytest.raises(EarlyBirdError, match=message):
            TrainConfig.from_args(parser.parse_args(base + argv))
    # --eb-scale scales per block: the FFN's 'not smoothed' stays 0
    eb = EBConfig(eb_method="mk", eb_profile="original", eb_scale=True)
    assert eb.detector_params(1500, "mlp")[0]["smooth"] == 0 and eb.detector_params(1500, "msa")[0]["smooth"] == 20
    assert scaled_params("mk", 1500, profile="original", block="msa")[0] == scaled_params("mk", 1500)[0]


def test_report_names_the_profile_and_the_original_numbers(run_dir, tmp_path):
    text = build_report([run_dir], tmp_path / "report", ratios=(0.4,), profile="original",
                        log=lambda _: None).read_text()
    assert "Detection profile: `original`" in text and "MSA `layerwise`, MLP `global`" in text
    assert "original code's number" in text
    for method in ("slope", "mk", "adf"):
        result = detect(run_dir, "msa", 0.4, method=method, profile="original",
                        **scaled_params(method, 300, profile="original", block="msa")[0])
        title = make_detector(method, "original", "msa").describe()
        assert f"| MSA | 40% | {title} | {result.draw_step or 'never'} | {result.draw_index or 'never'} |" in text
    paper = build_report([run_dir], tmp_path / "paper", ratios=(0.4,), log=lambda _: None).read_text()
    assert "Detection profile: `paper`" in paper and "original code's number" not in paper


def test_unknown_profile():
    with pytest.raises(EarlyBirdError, match="unknown profile 'nope'; choose one of paper, original"):
        get_profile("nope")
    with pytest.raises(EarlyBirdError, match="unknown profile"):
        detect(Records.from_arrays(msa=np.ones((3, 1, 2), np.float32)), method="hamming", profile="nope")


def test_the_differences_tool(run_dir, tmp_path):
    from test_training_support import load_script

    tool = load_script("tools/profile_differences.py", "profile_differences")
    doc = tmp_path / "library.md"
    doc.write_text(f"before\n<!-- {tool.MARKER}:start -->\nold\n<!-- {tool.MARKER}:end -->\nafter\n")
    assert tool.main([str(run_dir), "-o", str(tmp_path / "differences.md"), "--write", str(doc)]) == 0
    run = tool.measure(str(run_dir))
    for row in run["rows"]:
        for profile, key in (("paper", "paper"), ("original", "original")):
            params = scaled_params(row["method"], 300, profile=profile, block=row["block"])[0]
            result = detect(run_dir, row["block"], row["ratio"], method=row["method"], profile=profile, **params)
            assert row[key] == result.draw_step and (profile == "paper" or row["index"] == result.draw_index)
        # a rule is measured only where it applies: the FFN scope on MLP rows
        if row["block"] == "msa":
            assert "MLP global" not in row["rules"]
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "old" not in text
    assert tool.summary([run]) in text and "| all (the `original` profile) |" in text
    assert tool.run_table(run) in (tmp_path / "differences.md").read_text()
