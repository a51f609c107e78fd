"""Synthetic slimming-coefficient trajectories with a known plateau, for measuring detectors.

Each (layer, head) coefficient starts near 1.0 at a random offset and moves linearly to a
final level, which it reaches at step ``plateau`` and keeps afterwards; Gaussian noise is
added at every step. Final levels are distinct and share one head ranking across layers
(plus a small per-layer jitter), while the starting offsets are independent, so rankings
cross each other -- and the pruning mask keeps changing -- until the plateau, after which the
mask settles. A detector that draws before ``plateau`` drew a false positive; its delay is
``draw_step - plateau``.
"""

from __future__ import annotations

import numpy as np


def synthetic_coefficients(seed: int, *, layers: int = 12, heads: int = 12, steps: int = 3000, plateau: int = 1500,
                           start_spread: float = 0.01, level_range: tuple = (0.95, 0.99),
                           level_jitter: float = 0.0005, noise: float = 0.0003, dtype=np.float32) -> np.ndarray:
    """Coefficients (steps, layers, heads) that stop changing (but for noise) at ``plateau``."""
    if not 0 < plateau < steps:
        raise ValueError(f"plateau must be inside (0, steps); got plateau={plateau}, steps={steps}")
    rng = np.random.default_rng(seed)
    low, high = level_range
    # One evenly spaced ladder of head levels, shuffled, shared by all layers: distinct final
    # levels whose gaps (~(high-low)/heads) dwarf the jitter and the noise.
    ladder = np.linspace(low, high, heads)
    final = ladder[rng.permutation(heads)][None, :] + rng.normal(0.0, level_jitter, (layers, heads))
    start = 1.0 + rng.uniform(-start_spread, start_spread, (layers, heads))
    progress = np.minimum(np.arange(steps, dtype=np.float64) / plateau, 1.0)[:, None, None]
    path = start[None] + (final - start)[None] * progress
    path += rng.normal(0.0, noise, path.shape)
    return path.astype(dtype)


# The detectors compared by default: the paper's Hamming baseline and the three
# stationarity rules with their default parameters.
DEFAULT_DETECTORS = {
    "hamming (N=5, eps=0.1)": ("hamming", {"cached": 5, "threshold": 0.1}),
    "slope (defaults)": ("slope", {}),
    "mk (defaults)": ("mk", {}),
    "adf (defaults)": ("adf", {}),
}


def measure_detectors(seeds, *, ratio: float = 0.3, scope: str = "layerwise", detectors: dict | None = None,
                      **generator_kwargs) -> dict:
    """False-positive rate and delay of detectors over synthetic runs.

    For each seed the masks are computed once and fed to a fresh detector per entry of ``detectors`` ({label: (method, params)}), stopping at its draw.
    Returns {label: {"draws": [...], "false_positive_rate": f, "draw_rate": d,
    "median_delay": m}} where a false positive is a draw before the plateau and the delay is
    ``draw_step - plateau`` over the runs that drew (None if none did).
    """
    from .detectors import feed, make_detector
    from .masks import compute_mask

    detectors = DEFAULT_DETECTORS if detectors is None else detectors
    plateau = generator_kwargs.get("plateau", 1500)
    draws = {label: [] for label in detectors}
    for seed in seeds:
        masks = compute_mask(synthetic_coefficients(seed, **generator_kwargs), ratio, scope)
        steps = range(len(masks))
        for label, (method, params) in detectors.items():
            detector = make_detector(method, **params)
            feed(detector, steps, masks, stop_at_draw=True)
            draws[label].append(detector.draw_step)
    summary = {}
    for label, steps in draws.items():
        drawn = [s for s in steps if s is not None]
        summary[label] = {
            "draws": steps,
            "false_positive_rate": sum(s < plateau for s in drawn) / len(steps),
            "draw_rate": len(drawn) / len(steps),
            "median_delay": float(np.median([s - plateau for s in drawn])) if drawn else None,
        }
    return summary
