import numpy as np
import pytest

from earlybird.errors import EarlyBirdError
from earlybird.masks import compute_mask, hamming_distance, n_pruned, nuclear_norm


def reference_mask(coefs, ratio, scope):
    """Straightforward stable-argsort version of the documented rules, one step at a time."""
    importance = np.abs(np.asarray(coefs, dtype=np.float64))
    layers, n = importance.shape
    kept = np.ones((layers, n), dtype=bool)
    if scope == "layerwise":
        k = min(int(round(ratio * n)), n - 1)
        for layer in range(layers):
            kept[layer, np.argsort(importance[layer], kind="stable")[:k]] = False
        return kept
    k = min(int(round(ratio * layers * n)), layers * (n - 1))
    protected = [np.argsort(importance[layer], kind="stable")[-1] for layer in range(layers)]
    order = np.argsort(importance.reshape(-1), kind="stable")
    candidates = [i for i in order if i % n != protected[i // n]]
    for i in candidates[:k]:
        kept[i // n, i % n] = False
    return kept


def test_layerwise_prunes_smallest_magnitudes_per_layer():
    coefs = np.array([[0.5, -0.1, 0.3, 0.2], [-0.9, 0.05, 0.6, -0.7]])
    expected = np.array([[True, False, True, False], [True, False, False, True]])
    np.testing.assert_array_equal(compute_mask(coefs, 0.5), expected)


def test_ties_prune_lowest_index_first():
    np.testing.assert_array_equal(compute_mask(np.ones((1, 4)), 0.5), [[False, False, True, True]])
    coefs = np.array([[0.2, 0.1, 0.2, 0.1, 0.2]])  # round(0.6 * 5) = 3: both 0.1s, then the first 0.2
    np.testing.assert_array_equal(compute_mask(coefs, 0.6), [[False, False, True, False, True]])


def test_ratio_zero_keeps_everything_and_bad_ratios_raise():
    coefs = np.random.default_rng(0).normal(size=(3, 5))
    assert compute_mask(coefs, 0.0).all()
    assert compute_mask(coefs, 0.0, "global").all()
    for bad in (1.0, 1.5, -0.1, float("nan"), "x"):
        with pytest.raises(EarlyBirdError):
            compute_mask(coefs, bad)


def test_layerwise_never_prunes_a_whole_layer():
    coefs = np.array([[0.4, 0.3, 0.2, 0.1]])
    # round(0.9 * 4) = 4 would prune all of them: capped at n - 1, keeping the largest.
    np.testing.assert_array_equal(compute_mask(coefs, 0.9), [[True, False, False, False]])


def test_global_prunes_smallest_overall_but_keeps_one_per_layer():
    coefs = np.array([[0.9, 0.8, 0.7], [0.1, 0.2, 0.3]])
    # round(0.5 * 6) = 3: 0.1 and 0.2 go; 0.3 is layer 1's largest and stays; next is 0.7.
    expected = np.array([[True, True, False], [False, False, True]])
    np.testing.assert_array_equal(compute_mask(coefs, 0.5, "global"), expected)


def test_global_ties_use_flattened_order_and_protect_highest_index_maximum():
    np.testing.assert_array_equal(compute_mask(np.ones((2, 2)), 0.5, "global"), [[False, True], [False, True]])


def test_global_keeps_at_least_one_per_layer_at_high_ratio():
    rng = np.random.default_rng(1)
    coefs = rng.normal(size=(6, 10))
    coefs[2] *= 1e-3  # a layer far below the others would be pruned entirely without the rule
    mask = compute_mask(coefs, 0.95, "global")
    assert (mask.sum(axis=1) >= 1).all()
    assert (~mask).sum() == min(round(0.95 * 60), 6 * 9)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5, 0.8, 0.95])
def test_matches_stable_argsort_reference_with_many_ties(scope, ratio):
    rng = np.random.default_rng(int(ratio * 100))
    for _ in range(20):
        coefs = rng.integers(-3, 4, size=(4, 7)).astype(np.float32)  # lots of equal magnitudes
        np.testing.assert_array_equal(compute_mask(coefs, ratio, scope), reference_mask(coefs, ratio, scope))


@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_batch_equals_per_step_loop(scope):
    rng = np.random.default_rng(2)
    batch = rng.integers(0, 5, size=(40, 3, 9)).astype(np.float64) + rng.normal(0, 1e-3, size=(40, 3, 9)) * (
        rng.random((40, 3, 9)) > 0.5
    )
    masks = compute_mask(batch, 0.4, scope)
    assert masks.shape == batch.shape and masks.dtype == bool
    for t in range(len(batch)):
        np.testing.assert_array_equal(masks[t], compute_mask(batch[t], 0.4, scope))


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    coefs = torch.tensor([[0.5, -0.1, 0.3, 0.2]], requires_grad=True)
    np.testing.assert_array_equal(compute_mask(coefs, 0.5), [[True, False, True, False]])


def test_bad_shapes_and_values_raise():
    with pytest.raises(EarlyBirdError):
        compute_mask(np.ones(5), 0.3)
    with pytest.raises(EarlyBirdError):
        compute_mask(np.ones((2, 3, 4, 5)), 0.3)
    with pytest.raises(EarlyBirdError):
        compute_mask(np.array([[1.0, np.nan]]), 0.3)
    with pytest.raises(EarlyBirdError):
        compute_mask(np.ones((2, 3)), 0.3, scope="per-head")


def test_pruned_count_uses_python_round():
    assert n_pruned(0.3, 12) == 4  # 3.6
    assert n_pruned(0.5, 5) == 2  # 2.5 rounds half to even
    assert n_pruned(0.8, 3072) == 2458


def test_hamming_distance_is_fraction_of_differing_entries():
    a = np.array([[True, True, False, False], [True, False, True, False]])
    b = np.array([[True, False, False, False], [False, False, True, True]])
    assert hamming_distance(a, b) == pytest.approx(3 / 8)
    assert hamming_distance(a, a) == 0.0
    np.testing.assert_allclose(hamming_distance(np.stack([a, b]), a), [0.0, 3 / 8])


def test_nuclear_norm_matches_numpy_including_rank_deficient_masks():
    rng = np.random.default_rng(3)
    masks = [rng.random((5, 40)) > 0.4 for _ in range(10)]
    masks += [np.tile(rng.random(40) > 0.5, (5, 1)), np.ones((5, 40), bool), np.zeros((5, 40), bool)]
    masks += [rng.random((40, 5)) > 0.5]  # more layers than entries
    for m in masks:
        assert nuclear_norm(m) == pytest.approx(np.linalg.norm(m.astype(float), "nuc"), rel=1e-12, abs=1e-12)
    # a rank-one mask: norm = sqrt(rows * kept per row) exactly
    assert nuclear_norm(np.tile([True, False, True, True], (3, 1))) == pytest.approx(3.0, abs=1e-12)


def test_nuclear_norm_batch_equals_loop_and_reuses_frozen_masks():
    rng = np.random.default_rng(4)
    batch = rng.random((30, 4, 16)) > 0.5
    batch[10:20] = batch[10]  # a frozen stretch
    norms = nuclear_norm(batch)
    assert norms.shape == (30,)
    for t in range(30):
        assert norms[t] == nuclear_norm(batch[t])


def _reference_prune_k_smallest(rows, k):
    """The kernel before the anchored selection (one np.partition per row), kept as the reference."""
    kth = np.partition(rows, k - 1, axis=1)[:, k - 1 : k]
    below = rows < kth
    equal = rows == kth
    quota = k - below.sum(axis=1, dtype=np.int32)
    pruned = below | equal
    tied = np.flatnonzero(equal.sum(axis=1, dtype=np.int32) > quota)
    if tied.size:
        first = np.cumsum(equal[tied], axis=1, dtype=np.int32) <= quota[tied, None]
        pruned[tied] = below[tied] | (equal[tied] & first)
    return pruned


def _drifting_steps(rng, steps, layers, n, dtype, ties):
    """Consecutive steps whose values drift slowly plus noise (what makes the anchored selection take its fast
    path), or, with ties, few distinct values (rounded), so that ties sit at the k-th value."""
    base = rng.uniform(0.5, 1.5, (layers, n))
    trend = np.linspace(0.0, 1.0, steps)[:, None, None] * rng.uniform(-0.2, 0.2, (layers, n))
    values = base + trend + rng.normal(0.0, 0.003, (steps, layers, n))
    if ties:
        values = np.round(values * 20) / 20
    return values.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("signed", [False, True])
def test_anchored_kernel_equals_one_partition_per_row(dtype, ties, signed):
    from earlybird.masks import _prune_k_smallest

    rng = np.random.default_rng(7)
    steps, layers, n = 50, 3, 96
    values = _drifting_steps(rng, steps, layers, n, dtype, ties) - (dtype(1.0) if signed else 0)
    values[5, 1] = values[5, 1, 0]  # a row all equal
    values[9, 2, ::2] = np.inf  # protected entries (as global scope's +inf)
    for k in (1, 2, n // 3, n // 2, n - 2, n - 1):
        for period in (layers, 1):
            rows = values.reshape(steps * layers, n) if period == layers else values.reshape(steps, layers * n)
            kk = k if period == layers else min(k * layers, layers * n - 1)
            np.testing.assert_array_equal(_prune_k_smallest(rows, kk, period=period),
                                          _reference_prune_k_smallest(rows, kk), err_msg=f"k={kk} period={period}")


def test_anchored_kernel_with_signed_zeros():
    """-0.0 equals 0.0 but its float32 bit pattern is the largest: a bracket holding both zeros and ones must not pick
    a one where the k-th value is a zero."""
    from earlybird.masks import _prune_k_smallest

    rng = np.random.default_rng(5)
    steps, layers, n, k = 40, 2, 128, 5
    values = np.full((steps, layers, n), 5.0, dtype=np.float32) + rng.random((steps, layers, n), dtype=np.float32)
    for step in range(steps):
        zeros = 3 + step % 5  # 3 ... 7 zeros, so the k-th value flips between 0 and 1 from step to step
        values[step, :, :zeros] = np.where(rng.random((layers, zeros)) < 0.6, -0.0, 0.0)
        values[step, :, zeros : zeros + 3] = 1.0
    rows = values.reshape(steps * layers, n)
    np.testing.assert_array_equal(_prune_k_smallest(rows, k, period=layers), _reference_prune_k_smallest(rows, k))


@pytest.mark.parametrize("scope", ["layerwise", "global"])
@pytest.mark.parametrize("ties", [False, True])
def test_compute_mask_unchanged_by_the_anchored_kernel(monkeypatch, scope, ties):
    import earlybird.masks as masks

    coefs = _drifting_steps(np.random.default_rng(3), 60, 4, 128, np.float32, ties)
    coefs[::7] *= -1  # signs do not matter to the magnitude rule
    for ratio in (0.01, 0.3, 0.7, 0.99):
        for rule in ("magnitude", "quantile"):
            ours = compute_mask(coefs, ratio, scope, rule)
            with monkeypatch.context() as patched:
                patched.setattr(masks, "_prune_k_smallest", lambda rows, k, period=1: _reference_prune_k_smallest(rows, k))
                reference = compute_mask(coefs, ratio, scope, rule)
            np.testing.assert_array_equal(ours, reference, err_msg=f"ratio={ratio} rule={rule}")


@pytest.mark.parametrize("shape", [(7, 12, 3072), (5, 4, 13), (6, 12, 12), (3, 1, 64), (4, 9, 70)])
def test_popcount_gram_equals_the_matmul_and_the_norms_are_unchanged(shape):
    from earlybird.masks import _row_gram, _singular_values_squared

    rng = np.random.default_rng(11)
    masks = rng.random(shape) < 0.7
    masks[0] = True
    masks[1, 0] = False
    as_float = masks.astype(np.float32)
    np.testing.assert_array_equal(_row_gram(masks), as_float @ as_float.transpose(0, 2, 1))
    reference = np.linalg.eigvalsh((as_float @ as_float.transpose(0, 2, 1)).astype(np.float64))
    np.testing.assert_array_equal(_singular_values_squared(masks), reference)
