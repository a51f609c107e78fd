import json
import math
import warnings

import numpy as np
import pymannkendall
import pytest
import statsmodels.api as sm
from statsmodels.tools.sm_exceptions import SingularMatrixWarning
from statsmodels.tsa.stattools import adfuller

from earlybird.detectors import (
    DETECTORS,
    DetectionResult,
    HammingEB,
    OnlineEarlyBird,
    SlopeEB,
    default_maxlags,
    detect,
    detect_many,
    first_test_if_longer,
    first_test_step,
    hamming_table,
    make_detector,
    never_tests_message,
)
from earlybird.errors import EarlyBirdError
from earlybird.masks import nuclear_norm
from earlybird.records import Records
from earlybird.synthetic import synthetic_coefficients


def bits(text):
    return np.array([[c == "1" for c in text]])


# Hand-made sequence (10 entries per mask). Distances computed by hand:
# step 2, FIFO [m0 m1 m2]: d(m2,m0)=0.5, d(m2,m1)=0.1 -> max 0.5
# step 3, FIFO [m1 m2 m3]: d(m3,m1)=0.2, d(m3,m2)=0.1 -> max 0.2
# step 4, FIFO [m2 m3 m4]: d(m4,m2)=0.1, d(m4,m3)=0.0 -> max 0.1
# step 5, FIFO [m3 m4 m5]: d(m5,m3)=0.6, d(m5,m4)=0.6 -> max 0.6
# step 6, FIFO [m4 m5 m6]: d(m6,m4)=0.0, d(m6,m5)=0.6 -> max 0.6
SEQUENCE = ["0000000000", "1111000000", "1111100000", "1111110000", "1111110000", "0000000000", "1111110000"]


def run_hamming(**params):
    detector = HammingEB(**params)
    draws = [step for step, text in enumerate(SEQUENCE) if detector.update(step, bits(text))]
    return detector, draws


def test_hamming_fifo_hand_computed():
    detector, draws = run_hamming(cached=3, threshold=0.25)
    assert draws == [3] and detector.draw_step == 3
    assert [e["step"] for e in detector.trace] == [2, 3, 4, 5, 6]  # entries start once the FIFO is full
    np.testing.assert_allclose([e["distance"] for e in detector.trace], [0.5, 0.2, 0.1, 0.6, 0.6])
    assert run_hamming(cached=3, threshold=0.15)[0].draw_step == 4
    assert run_hamming(cached=3, threshold=0.05)[0].draw_step is None


def test_hamming_needs_a_full_fifo():
    detector = HammingEB(cached=4, threshold=0.1)
    same = bits("1100110011")
    assert [detector.update(s, same) for s in range(5)] == [False, False, False, True, False]
    assert detector.draw_step == 3


def test_hamming_patience_counts_consecutive_passing_checks():
    assert run_hamming(cached=3, threshold=0.25, patience=2)[0].draw_step == 4
    assert run_hamming(cached=3, threshold=0.25, patience=3)[0].draw_step is None  # step 5 breaks the streak


def test_hamming_every_pushes_and_checks_every_e_steps():
    # every=2: checks at steps 1, 3, 5 (when (step + 1) // 2 grows); FIFO [m1 m3 m5] full at step 5
    detector = HammingEB(cached=3, threshold=0.7, every=2)
    for step, text in enumerate(SEQUENCE):
        detector.update(step, bits(text))
    assert [e["step"] for e in detector.trace] == [5]
    # d(m5, m1) = 0.4, d(m5, m3) = 0.6
    assert detector.trace[0]["distance"] == pytest.approx(0.6)
    assert detector.draw_step == 5


def test_hamming_incremental_distances_equal_brute_force():
    rng = np.random.default_rng(0)
    masks = rng.random((200, 3, 20)) > 0.5
    flips = rng.random((200, 3, 20)) < 0.05
    masks = np.logical_xor.accumulate(flips, axis=0) ^ masks[0]
    detector = HammingEB(cached=7, threshold=0.01)
    for step, mask in enumerate(masks):
        detector.update(step, mask)
    for entry in detector.trace:
        s = entry["step"]
        brute = max(np.mean(masks[s] != masks[s - j]) for j in range(1, 7))
        assert entry["distance"] == pytest.approx(brute, abs=1e-15)


def smoothed_window(raw, smooth, window, end):
    """Independent re-computation: mean of the last min(smooth, available) raw values."""
    means = [np.mean(raw[max(0, i - smooth + 1) : i + 1]) for i in range(end + 1)]
    return np.array(means[end - window + 1 : end + 1])


def noisy_series(n=400, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return 20 - 0.004 * t + np.where(t > 250, 0.004 * (t - 250), 0) + rng.normal(0, 0.3, n)


@pytest.mark.parametrize("method", ["slope", "mk", "adf"])
def test_p_values_equal_direct_library_calls(method):
    raw = noisy_series()
    params = {"smooth": 20, "window": 60, "every": 40, "alpha": 1e-9 if method != "adf" else 1e-300}
    if method == "slope":
        params["maxlags"] = 3
    detector = make_detector(method, **params)
    for step, value in enumerate(raw):
        detector.update_value(step, value)
    assert len(detector.trace) >= 5
    for entry in detector.trace:
        window = smoothed_window(raw, 20, 60, entry["step"])
        if method == "slope":
            fit = sm.OLS(window, sm.add_constant(np.arange(60.0))).fit(cov_type="HAC", cov_kwds={"maxlags": 3})
            expected = fit.pvalues[1]
        elif method == "mk":
            expected = pymannkendall.original_test(window).p
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SingularMatrixWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                expected = adfuller(window, result_object=True).pvalue
        assert entry["p_value"] == pytest.approx(expected, rel=1e-6, abs=1e-12)


def test_default_maxlags_rule():
    assert default_maxlags(300) == 5
    assert SlopeEB().params()["maxlags"] == 5


@pytest.mark.parametrize("method,p_value", [("slope", 1.0), ("mk", 1.0), ("adf", 0.0)])
def test_constant_window_is_stationary_without_warnings(method, p_value):
    detector = make_detector(method, smooth=5, window=20, every=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        draws = [s for s in range(60) if detector.update_value(s, 7.25)]
    # checks at 9 (window not yet full), 19, 29, ...: the first full window is at step 19
    assert draws == [19]
    first = detector.trace[0]
    assert first == {"step": 19, "statistic": None, "p_value": p_value, "passed": True, "constant": True}


def test_stationarity_patience_and_check_schedule():
    detector = make_detector("mk", smooth=1, window=10, every=5, patience=3)
    for step in range(40):
        detector.update_value(step, 3.0)
    assert [e["step"] for e in detector.trace] == [9, 14, 19, 24, 29, 34, 39]
    assert detector.draw_step == 19


def test_every_counts_training_steps_when_only_some_steps_are_recorded():
    detector = make_detector("slope", smooth=1, window=10, every=100)
    for step in range(0, 1000, 3):  # recorded every 3rd step
        detector.update_value(step, 1.0)
    # first recorded step completing 100, 200, ... training steps: 99, 201, 300, 399, 501, ...
    assert [e["step"] for e in detector.trace][:5] == [99, 201, 300, 399, 501]


def test_steps_must_increase_and_parameters_are_validated():
    detector = HammingEB()
    detector.update(5, bits("1"))
    with pytest.raises(EarlyBirdError):
        detector.update(5, bits("1"))
    with pytest.raises(EarlyBirdError):
        make_detector("fisher")
    with pytest.raises(EarlyBirdError):
        make_detector("slope", cached=5)
    for bad in ({"window": 2}, {"alpha": 1.5}, {"every": 0}, {"patience": 0}):
        with pytest.raises(EarlyBirdError):
            make_detector("mk", **bad)
    with pytest.raises(EarlyBirdError):
        make_detector("hamming", threshold=0)
    assert set(DETECTORS) == {"hamming", "slope", "mk", "adf"}


def small_records():
    coefs = synthetic_coefficients(3, layers=4, heads=8, steps=900, plateau=450)
    return Records.from_arrays(msa=coefs, mlp=coefs[:, :, ::-1] * 1.01)


PARAMS = {
    "hamming": {"cached": 5, "threshold": 0.05},
    "slope": {"smooth": 30, "window": 60, "every": 25},
    "mk": {"smooth": 30, "window": 60, "every": 25},
    "adf": {"smooth": 30, "window": 60, "every": 25},
}


@pytest.mark.parametrize("method", list(DETECTORS))
def test_offline_equals_online(method):
    records = small_records()
    offline = detect(records, "msa", 0.3, "layerwise", method, stop_at_draw=False, **PARAMS[method])
    assert offline.draw_step is not None

    online = OnlineEarlyBird("msa", 0.3, "layerwise", method, **PARAMS[method])
    draws = [int(s) for s, c in zip(records.steps, records.msa) if online.observe(s, msa=c)]
    assert draws == [offline.draw_step] and online.draw_step == offline.draw_step
    assert online.result().trace == offline.trace

    batched = OnlineEarlyBird("msa", 0.3, "layerwise", method, **PARAMS[method])
    for start in range(0, records.total_steps, 64):
        batched.observe_many(records.steps[start : start + 64], msa=records.msa[start : start + 64])
    assert batched.draw_step == offline.draw_step
    assert batched.result().trace == offline.trace


@pytest.mark.parametrize("stop_at_draw", [True, False])
@pytest.mark.parametrize("elements", [1 << 23, 4 * 8 * 50, 4 * 8 * 7])  # one block of steps; blocks of 50 and of 7
def test_one_pass_equals_separate_detect_calls(monkeypatch, stop_at_draw, elements):
    """`detect_many` (the CLI's --method all): masks computed once per block of steps, the next block in a background
    thread, fed to every detector: the results of separate `detect` calls, whatever the blocks."""
    import earlybird.detectors as detectors

    records = small_records()
    monkeypatch.setattr(detectors, "_SCAN_ELEMENTS", elements)
    many = detect_many(records, "msa", 0.3, "layerwise", PARAMS, stop_at_draw=stop_at_draw)
    assert set(many) == set(PARAMS)
    for method, params in PARAMS.items():
        alone = detect(records, "msa", 0.3, "layerwise", method, stop_at_draw=stop_at_draw, **params)
        assert many[method].draw_step == alone.draw_step is not None and many[method].trace == alone.trace


def test_online_accepts_torch_and_waits_for_every_block():
    torch = pytest.importorskip("torch")
    records = small_records()
    params = PARAMS["mk"]
    msa_draw = detect(records, "msa", 0.3, method="mk", **params).draw_step
    mlp_draw = detect(records, "mlp", 0.3, method="mk", **params).draw_step
    online = OnlineEarlyBird(("msa", "mlp"), 0.3, "layerwise", "mk", **params)
    for step in range(records.total_steps):
        online.observe(step, msa=torch.from_numpy(records.msa[step].copy()), mlp=records.mlp[step])
    assert online.draw_step == max(msa_draw, mlp_draw)
    assert online.result("mlp").draw_step == mlp_draw
    with pytest.raises(EarlyBirdError):
        online.observe(records.total_steps, msa=records.msa[0])  # mlp missing


def test_stop_at_draw_truncates_the_trace_only():
    records = small_records()
    full = detect(records, method="slope", stop_at_draw=False, **PARAMS["slope"])
    short = detect(records, method="slope", **PARAMS["slope"])
    assert short.draw_step == full.draw_step
    assert short.trace == full.trace[: len(short.trace)] and short.trace[-1]["step"] == short.draw_step


def test_detection_result_json():
    result = detect(small_records(), method="hamming", **PARAMS["hamming"])
    data = json.loads(result.to_json())
    assert data["method"] == "hamming" and data["draw_step"] == result.draw_step
    assert data["total_steps"] == 900 and isinstance(data["trace"], list) and data["params"]["cached"] == 5
    empty = DetectionResult("mk", None, 10, [{"step": 1, "p_value": math.nan}], {})
    assert json.loads(empty.to_json()) == {"method": "mk", "draw_step": None, "total_steps": 10, "params": {},
                                           "trace": [{"step": 1, "p_value": None}]}


def test_hamming_table_equals_separate_runs():
    records = small_records()
    table = hamming_table(records, "msa", ratios=(0.3, 0.6), cached=(3, 20, 100), thresholds=(0.1, 0.02))
    for (ratio, cached, eps), step in table.items():
        separate = detect(records, "msa", ratio, method="hamming", cached=cached, threshold=eps).draw_step
        assert step == separate, (ratio, cached, eps)
    assert any(v is not None for v in table.values())


def test_never_tests_message_gives_the_first_test_step_and_the_run_that_reaches_it():
    """The study's slope detector (smooth 200, window 300, every 100) on the 360-step default run: the window fills
    at step 300 and the next check is step 399, so the message names step 399 and the run length that reaches it."""
    steps = range(1, 361)
    detector = make_detector("slope")
    assert first_test_step(detector, steps) is None and first_test_if_longer(detector, steps) == 399
    assert first_test_step(detector, range(1, 400)) == 399  # the arithmetic holds: a 399-step run tests at 399
    message = never_tests_message(detector, steps, "this run")
    assert "so its first test would be at step 399" in message and "a longer run (one reaching step 399)" in message
    # recorded every 4 steps: observations 4, 8, ...; the 300th is step 1200, which completes the 12th hundred: a check
    assert first_test_if_longer(detector, range(4, 361, 4)) == 1200
    # Hamming: cached=5 checks every 10 steps; the fifth check is at step 49
    assert first_test_if_longer(make_detector("hamming", cached=5, every=10), range(1, 30)) == 49


def test_ebtrain_refusal_names_the_max_steps_and_the_scaling_that_would_test():
    from earlybird.training.config import EBConfig, PruningConfig
    from earlybird.training.ebtrain import EBTrain

    pruning = PruningConfig(self_pruning_ratio=0.3)
    with pytest.raises(EarlyBirdError) as caught:
        EBTrain(EBConfig(eb_method="slope"), pruning, total_steps=360).check_budget()
    message = str(caught.value)
    assert "first test would be at step 399" in message and "--max-steps 399 or more" in message
    assert "--eb-scale to scale the study's parameters to this run" in message
    # scaled to 360 steps (window 30, every 5) the detector tests: --eb-scale is what the message says it is
    EBTrain(EBConfig(eb_method="slope", eb_scale=True), pruning, total_steps=360).check_budget()
    # 20 steps: even the scaled window (its floor, 30) is too long, so --eb-scale is not offered
    with pytest.raises(EarlyBirdError) as caught:
        EBTrain(EBConfig(eb_method="slope", eb_scale=False), pruning, total_steps=20).check_budget()
    assert "--eb-scale" not in str(caught.value) and "--max-steps 399 or more" in str(caught.value)


def drifting_masks(steps=160, layers=3, n=20, seed=0, rate=0.05):
    rng = np.random.default_rng(seed)
    flips = rng.random((steps, layers, n)) < rate * np.linspace(1, 0, steps)[:, None, None] ** 2  # settles
    return np.logical_xor.accumulate(flips, axis=0) ^ (rng.random((layers, n)) > 0.5)


@pytest.mark.parametrize("profile", ["paper", "original"])
@pytest.mark.parametrize("params", [dict(cached=5, threshold=0.02), dict(cached=3, threshold=0.05, every=4),
                                    dict(cached=7, threshold=0.03, patience=3), dict(cached=2, threshold=0.01)])
@pytest.mark.parametrize("stop_at_draw", [True, False])
def test_hamming_fed_a_block_at_once_equals_the_update_loop(profile, params, stop_at_draw):
    """The vectorised block feed (packed bits, one XOR per lag) against `update` step by step: the same trace, draw,
    draw index, clock and FIFO, over blocks of every size (1 step to all), recorded steps with gaps, and a detector
    that goes on with `update` after a block."""
    masks = drifting_masks()
    steps = np.cumsum(np.r_[1, np.random.default_rng(1).integers(1, 3, len(masks) - 1)])  # gaps of 1 or 2 steps
    looped = make_detector("hamming", profile, **params)
    drew_at = None
    for i, (step, mask) in enumerate(zip(steps, masks)):
        if looped.update(int(step), mask) and stop_at_draw:
            drew_at = i
            break
    for size in (1, 2, 7, 50, len(masks)):
        blocked = make_detector("hamming", profile, **params)
        for start in range(0, len(masks), size):
            if stop_at_draw and blocked.draw_step is not None:
                break
            blocked.feed_many(steps[start:start + size], masks[start:start + size], stop_at_draw=stop_at_draw)
        assert blocked.result(10).to_dict() == looped.result(10).to_dict(), size
        assert (blocked.observed, blocked.checks, blocked._previous_step) == (looped.observed, looped.checks,
                                                                              looped._previous_step)
        np.testing.assert_array_equal(blocked._fifo_masks(60), looped._fifo_masks(60))
        np.testing.assert_array_equal(np.sort(blocked._distance), np.sort(looped._distance))  # (ring slots differ)
    assert looped.draw_step is not None and (drew_at is not None) == stop_at_draw
    # after a block, one more step through `update` goes on from the same state
    if not stop_at_draw:
        extra = masks[-1] ^ (np.arange(60).reshape(3, 20) % 7 == 0)
        blocked.update(int(steps[-1]) + 1, extra)
        looped.update(int(steps[-1]) + 1, extra)
        assert blocked.trace == looped.trace


@pytest.mark.parametrize("rule", ["magnitude", "quantile"])  # the paper's and the original code's conventions
@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_the_scans_masks_are_compute_mask_step_by_step(monkeypatch, rule, scope):
    """The offline scan computes masks a block of steps at a time (one partition over (steps, layers, n)), blocks
    ahead in worker threads: in order, and each step's mask is compute_mask of that step alone -- ties included."""
    from earlybird import detectors as module
    from earlybird.masks import compute_mask

    monkeypatch.setattr(module, "_SCAN_ELEMENTS", 5 * 3 * 9)  # blocks of 5 steps: many blocks, several in flight
    monkeypatch.setattr(module, "_mask_workers", lambda: 2)
    rng = np.random.default_rng(3)
    coefs = rng.integers(-2, 3, size=(43, 3, 9)).astype(np.float32)  # many equal magnitudes and signed ties
    coefs[::7] += rng.normal(0, 1e-3, size=coefs[::7].shape).astype(np.float32)
    blocks = list(module._mask_blocks(coefs, 0.4, scope, rule, lambda: True))
    assert [b[0] for b in blocks] == list(range(0, 43, 5))
    masks = np.concatenate([b[2] for b in blocks])
    for t in range(len(coefs)):
        np.testing.assert_array_equal(masks[t], compute_mask(coefs[t], 0.4, scope, rule))
    np.testing.assert_allclose(np.concatenate([b[3] for b in blocks]), nuclear_norm(masks))
