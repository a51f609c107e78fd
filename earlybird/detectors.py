"""Early-bird detectors: one online ``update(step, mask)`` used both live and offline.

Offline detection (:func:`detect`) computes masks for every recorded step in vectorised
blocks and then feeds the very same online detector one step at a time, so offline and
online give the same draw by construction.

Which observed steps are *checks* (shared by every detector): a check happens at the
first observed step at which a new multiple of ``every`` training steps is completed, i.e.
when ``(step + 1) // every`` exceeds its value at the previous observed step (for the first
observation, at step - 1). With steps 0, 1, 2, ... and ``every=100`` the checks are steps
99, 199, 299, ...; with ``every=1`` every observed step is a check. ``every`` therefore
counts training steps even when only every k-th step was recorded.

A detector draws at the check that completes ``patience`` consecutive passing checks
(``patience=1`` is the papers' rule). After drawing it keeps its trace if fed more steps,
but ``draw_step`` never changes and ``update`` returns True only once.

Each detector class belongs to a detection profile (``profile``, default ``paper``; see
earlybird.profiles): the ``original`` profile's variants (the original research code's rules) are
registered beside the paper's under the same method names, and every function here takes
``profile=``.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import warnings
from collections import deque
from dataclasses import dataclass, field, replace

import numpy as np

from .errors import EarlyBirdError
from .masks import DEFAULT_GQA_RULE, as_numpy, check_gqa_rule, check_ratio, check_scope, compute_mask, nuclear_norm
from .profiles import DEFAULT_PROFILE, get_profile
from .records import Records, load_records

# Steps per block in offline scans: bounds the mask/SVD temporaries whatever the record size.
_SCAN_ELEMENTS = 1 << 23


@dataclass
class DetectionResult:
    """Outcome of a detection: draw step (None if never drawn) and the per-check trace.

    Under a profile that reports indices (``original``), ``draw_index`` is the number the original research code
    prints for the same draw (``indexed`` is then True and the JSON carries it; see docs/library.md).
    """

    method: str
    draw_step: int | None
    total_steps: int
    trace: list = field(default_factory=list)
    params: dict = field(default_factory=dict)
    draw_index: int | None = None
    indexed: bool = False

    def to_dict(self) -> dict:
        return {
            "method": self.method,
            "draw_step": self.draw_step,
            **({"draw_index": self.draw_index} if self.indexed else {}),
            "total_steps": self.total_steps,
            "params": json_safe(self.params),
            "trace": json_safe(self.trace),
        }

    def to_json(self, indent=None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


def json_safe(value):
    """Strict JSON: NaN/inf become null, numpy scalars become Python numbers."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


# --------------------------------------------------------------------------- parameters


@dataclass(frozen=True)
class Param:
    """One detector parameter, declared next to the detector that takes it.

    Everything else derives from the declaration: the detector's keyword and its validation, the `earlybird detect`
    option `--<name>`, the training flag `--eb-<name>`, the help texts, and -- for parameters counted in training
    steps (`steps=True`) -- how the study's values are scaled down to a shorter run.
    """

    name: str
    kind: type  # int, float or str
    default: object
    help: str
    minimum: int | None = None  # ints: the smallest valid value
    interval: str | None = None  # floats: "(0, 1)", "(0, 1]", ...
    choices: tuple | None = None  # strs
    optional: bool = False  # None is a valid value (the detector then uses a rule, see its help)
    steps: bool = False  # counted in training steps: scaled to shorter runs (scaled_params)
    floor: int = 1  # the smallest value a scaled parameter takes

    def check(self, value):
        """The validated value; EarlyBirdError naming the parameter and what was expected."""
        if value is None and self.optional:
            return None
        if self.kind is int:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < self.minimum:
                raise EarlyBirdError(f"{self.name} must be an integer >= {self.minimum}; got {value!r}")
            return int(value)
        if self.kind is float:
            try:
                number = float(value)
            except (TypeError, ValueError):
                raise EarlyBirdError(f"{self.name} must be a number in {self.interval}; got {value!r}") from None
            low, high = (float(v) for v in self.interval[1:-1].split(","))
            above = number >= low if self.interval[0] == "[" else number > low
            below = number <= high if self.interval[-1] == "]" else number < high
            if not (above and below):
                raise EarlyBirdError(f"{self.name} must be in {self.interval}; got {value!r}")
            return number
        if value not in self.choices:
            raise EarlyBirdError(f"{self.name} must be one of {', '.join(map(str, self.choices))}; got {value!r}")
        return value

    def parse(self, text: str):
        """A command-line value: 'none' is None for optional parameters."""
        if self.optional and text.lower() == "none":
            return None
        return self.kind(text)

    def describe(self) -> str:
        return f"{self.help} (default {self.default})"


def _param(name, kind, default, help, **more) -> Param:
    return Param(name, kind, default, help, **more)


EVERY = _param("every", int, 1, "check every E training steps", minimum=1)
PATIENCE = _param("patience", int, 1, "consecutive passing checks needed to draw", minimum=1)


def is_check(step: int, previous: int | None, every: int) -> bool:
    """The check clock shared by every detector (see the module docstring): does observing `step`, after `previous`
    (None for the first observation), complete a new multiple of `every` training steps?"""
    before = step - 1 if previous is None else previous
    return (step + 1) // every > (before + 1) // every


class Detector:
    """Base: parameters from the declaration, step bookkeeping, the check clock, patience and the trace.

    A detector declares `method` (its registry name), `title` (a format string over its parameters, for reports)
    and `PARAMS` (its parameters, in the order `params()` reports them), implements `update(step, mask)`, and is
    added to the registry with `@register`. `profile` names the detection profile the class belongs to (a variant
    of the method under another profile is another class), `BLOCK_DEFAULTS` per-block defaults that replace the
    declared ones (`make_detector(..., block=)`).
    """

    method = ""
    title = ""
    profile = DEFAULT_PROFILE
    uses_norm = False  # consumes the mask's nuclear norm only (update_value): masks are reduced before feeding
    PARAMS: tuple[Param, ...] = (EVERY, PATIENCE)
    BLOCK_DEFAULTS: dict = {}

    def __init__(self, **params):
        spec = self.param_spec()
        unknown = sorted(set(params) - set(spec))
        if unknown:
            raise TypeError(f"unexpected parameter {unknown[0]!r} (it takes {', '.join(spec)})")
        for name, param in spec.items():
            setattr(self, name, param.check(params.get(name, param.default)))
        self.draw_step: int | None = None
        self.draw_index: int | None = None  # profiles that report indices (see DetectionResult)
        self.trace: list = []
        self.observed = 0
        self.checks = 0
        self._previous_step: int | None = None
        self._streak = 0

    @classmethod
    def param_spec(cls) -> dict[str, Param]:
        return {p.name: p for p in cls.PARAMS}

    def params(self) -> dict:
        return {name: getattr(self, name) for name in self.param_spec()}

    def describe(self) -> str:
        """The title with this detector's parameters filled in."""
        return self.title.format(**self.params())

    def checks_at(self, step: int, previous: int | None, index: int) -> bool:
        """Whether observing `step` -- the index-th observation (0-based), after step `previous` (None for the first)
        -- is a check: a pure function of the parameters (EB-Train asks it before feeding). The shared clock."""
        return is_check(step, previous, self.every)

    def _observe_step(self, step) -> bool:
        """Validate the step and say whether it is a check."""
        step = int(step)
        if self._previous_step is not None and step <= self._previous_step:
            raise EarlyBirdError(f"steps must increase: got step {step} after {self._previous_step}")
        check = self.checks_at(step, self._previous_step, self.observed)
        self._previous_step = step
        self.observed += 1
        self.checks += check
        return check

    def _conclude(self, step: int, passed: bool) -> bool:
        self._streak = self._streak + 1 if passed else 0
        if self.draw_step is None and self._streak >= self.patience:
            self.draw_step = int(step)
            return True
        return False

    def update(self, step: int, mask) -> bool:
        raise NotImplementedError

    def feed_many(self, steps, inputs, stop_at_draw: bool = False) -> bool:
        """Feed a block of steps' inputs (nuclear norms for `uses_norm` detectors, else masks (K, L, N)) in order;
        True if it drew. With `stop_at_draw` the steps after the draw are not fed. A detector may override it with
        a vectorised equivalent (the Hamming rule does): the state, the trace and the draw are those of the loop."""
        update = self.update_value if self.uses_norm else self.update
        drew = False
        for step, item in zip(steps, inputs):
            if update(int(step), item):
                drew = True
                if stop_at_draw:
                    break
        return drew

    def can_test(self, observed: int, checks: int) -> bool:
        """Whether a check after `observed` observations, the `checks`-th, can run the test (not just warm up)."""
        return True

    def needs(self) -> tuple[str, str]:
        """(what a test needs, which parameters to lower): the explanation when it can never test."""
        return f"a check (every {self.every} steps)", "a smaller every"

    def result(self, total_steps: int | None = None, **extra_params) -> DetectionResult:
        return DetectionResult(
            method=self.method,
            draw_step=self.draw_step,
            total_steps=self.observed if total_steps is None else int(total_steps),
            trace=list(self.trace),
            params={**extra_params, "profile": self.profile, **self.params()},
            draw_index=self.draw_index,
            indexed=get_profile(self.profile).reports_index,
        )

    @classmethod
    def offline(cls, records, block: str = "msa", ratio: float = 0.3, scope: str = "layerwise", **params) -> DetectionResult:
        """Run this detector over recorded coefficients (see :func:`detect`)."""
        return detect(records, block=block, ratio=ratio, scope=scope, method=cls.method, **params)


# {profile: {method: class}}; DETECTORS is the default profile's (the paper's) registry.
VARIANTS: dict[str, dict[str, type[Detector]]] = {DEFAULT_PROFILE: {}}
DETECTORS: dict[str, type[Detector]] = VARIANTS[DEFAULT_PROFILE]


def register(cls: type[Detector]) -> type[Detector]:
    """Add a detector class to the registry of its profile (a class decorator): the CLI, the training flags,
    EB-Train, the report and the benchmarks all take their detectors from the registry (`DETECTORS` for the
    default profile, `VARIANTS[profile]` for each)."""
    if not cls.method:
        raise ValueError(f"{cls.__name__} has no method name")
    get_profile(cls.profile)
    VARIANTS.setdefault(cls.profile, {})[cls.method] = cls
    return cls


def detector_class(method: str, profile: str | None = None) -> type[Detector]:
    """The class of `method` under `profile` (None: the default profile)."""
    name = get_profile(profile).name
    registry = VARIANTS.get(name, {})
    try:
        return registry[method]
    except (KeyError, TypeError):
        under = "" if name == DEFAULT_PROFILE else f" under profile {name}"
        raise EarlyBirdError(f"unknown method {method!r}{under}; choose one of {', '.join(registry)}") from None


def all_params() -> dict[str, dict[str, Param]]:
    """{parameter name: {method: its declaration}} over the registries (the default profile's declaration first),
    in declaration order."""
    table: dict[str, dict[str, Param]] = {}
    for registry in (DETECTORS, *(v for k, v in VARIANTS.items() if k != DEFAULT_PROFILE)):
        for method, cls in registry.items():
            for name, param in cls.param_spec().items():
                table.setdefault(name, {}).setdefault(method, param)
    return table


def add_param_arguments(parser, prefix: str = "", flag_prefix: str = "") -> None:
    """One option per detector parameter of the registry (`--{flag_prefix}{name}`, dest `{prefix}{name}`), grouped by
    the methods that take it, with help and defaults from the declarations. An option not given leaves no attribute
    (the method's own default applies), so 'none' can be a value of its own."""
    import argparse

    groups = {}
    for name, by_method in all_params().items():
        methods = tuple(by_method)
        if methods not in groups:
            title = "every method" if len(methods) == len(DETECTORS) else ", ".join(methods)
            groups[methods] = parser.add_argument_group(f"{'EB-Train ' if flag_prefix else ''}detector parameters: {title}")
        first = next(iter(by_method.values()))
        defaults = {str(p.default) for p in by_method.values()}
        default = (defaults.pop() if len(defaults) == 1 else
                   "; ".join(f"{method} {p.default}" for method, p in by_method.items()))
        groups[methods].add_argument(f"--{flag_prefix}{name.replace('_', '-')}", dest=f"{prefix}{name}",
                                     type=first.parse, default=argparse.SUPPRESS, metavar=name.upper(),
                                     help=f"{first.help} (default {default})")


def given_params(args, prefix: str = "") -> dict:
    """The detector parameters given on the command line (dest `{prefix}{name}`), by name."""
    return {name: getattr(args, f"{prefix}{name}") for name in all_params() if hasattr(args, f"{prefix}{name}")}


def check_applicable(method: str, given: dict, flag=lambda name: f"--{name}", method_flag: str = "--method",
                     profile: str | None = None) -> None:
    """Refuse a parameter the method does not take (under `profile`), naming the flag (`given`: name -> value)."""
    spec = detector_class(method, profile).param_spec()
    name_of = get_profile(profile).name
    under = "" if name_of == DEFAULT_PROFILE else f" under profile {name_of}"
    for name in given:
        if name not in spec:
            raise EarlyBirdError(f"{flag(name)} does not apply to {method_flag} {method}{under}")


# The case study's run: ViT-Base fine-tuned on ImageNet-1k for 14,774 steps. Parameters counted in steps (smoothing,
# windows, check period) were chosen for that length; a shorter run gets them scaled down (never up).
STUDY_STEPS = 14774


def study_params(method: str, profile: str | None = None, block: str | None = None) -> dict[str, Param]:
    """The method's step-counted parameters under `profile` for `block`, with the study's values as defaults."""
    cls = detector_class(method, profile)
    block_defaults = cls.BLOCK_DEFAULTS.get(block, {}) if block else {}
    return {name: replace(p, default=block_defaults.get(name, p.default))
            for name, p in cls.param_spec().items() if p.steps}


def scaled_params(method: str, total_steps: int, scale: bool = True, profile: str | None = None,
                  block: str | None = None) -> tuple[dict, float]:
    """The method's step-counted parameters, scaled from the study's run length to `total_steps` (never up), with
    the declared floors; and the factor (1.0 when the run is as long as the study's or `scale` is off). A value of
    0 (the original profile's 'not smoothed') stays 0."""
    factor = min(1.0, total_steps / STUDY_STEPS) if scale else 1.0
    params = {name: max(p.floor, int(round(p.default * factor))) if p.default else p.default
              for name, p in study_params(method, profile, block).items()}
    return params, factor


def describe_scaling(method: str, total_steps: int, params: dict, factor: float, profile: str | None = None,
                     block: str | None = None) -> str:
    """One line saying how the study's parameters were scaled (printed wherever scaling is used)."""
    spec = study_params(method, profile, block)
    if not params:
        return "nothing to scale"
    values = ", ".join(f"{name} {value}" for name, value in params.items())
    study = "/".join(str(spec[name].default) for name in params)
    floors = "/".join(str(spec[name].floor) for name in params)
    return (f"{values}: the study's {study} scaled by {factor:.4f} = {total_steps} / {STUDY_STEPS} steps "
            f"(floors {floors})")


@register
class HammingEB(Detector):
    """You et al. (2020): draw when the newest mask is within ``threshold`` of every cached one.

    At each check the current mask enters a FIFO of the last ``cached`` masks; once the FIFO
    is full, the check passes if the normalised Hamming distance between the newest mask and
    every other cached mask is < ``threshold``. Trace entries (max distance) start when the
    FIFO is full. Distances to the newest mask are maintained incrementally: a new mask only
    touches the entries where it differs from the previous one, so a large FIFO costs
    O(cached x changed entries) per check instead of O(cached x mask size).
    """

    method = "hamming"
    title = "Hamming (N={cached}, ε={threshold})"
    PARAMS = (_param("cached", int, 5, "masks in the FIFO", minimum=2),
              _param("threshold", float, 0.1, "distance threshold eps", interval="(0, 1]"),
              EVERY, PATIENCE)

    def __init__(self, **params):
        super().__init__(**params)
        self._fifo: np.ndarray | None = None  # (entries, cached) bool ring buffer
        self._distance = np.zeros(self.cached, dtype=np.int64)  # differing entries vs newest
        self._filled = 0
        self._newest = -1
        self._shape = None

    def params(self) -> dict:
        return {"cached": self.cached, "threshold": self.threshold, **super().params()}

    def _push(self, mask: np.ndarray) -> None:
        flat = np.asarray(mask, dtype=bool).reshape(-1)
        if self._fifo is None:
            self._shape = np.shape(mask)
            # Entry-major (entries, cached): the entries a new mask flips are contiguous rows.
            self._fifo = np.zeros((flat.size, self.cached), dtype=bool)
            self._newest_mask = np.zeros(flat.size, dtype=bool)
        elif np.shape(mask) != self._shape:
            raise EarlyBirdError(f"mask shape changed from {self._shape} to {np.shape(mask)}")
        if self._filled:
            newest = self._newest_mask
            changed = np.flatnonzero(flat != newest)
            if changed.size:
                # An entry that flipped adds 1 to the distance of every cached mask that agreed
                # with the old newest there, and removes 1 from every one that did not.
                was_kept = changed[newest[changed]]
                was_pruned = changed[~newest[changed]]
                cached = self._fifo[:, : self._filled]
                agreed = cached[was_kept].sum(axis=0, dtype=np.int64)
                agreed += was_pruned.size - cached[was_pruned].sum(axis=0, dtype=np.int64)
                self._distance[: self._filled] += 2 * agreed - changed.size
        slot = (self._newest + 1) % self.cached
        self._fifo[:, slot] = flat
        self._newest_mask[:] = flat
        self._distance[slot] = 0
        self._newest = slot
        self._filled = min(self._filled + 1, self.cached)

    # The largest FIFO fed a block at once: the block's distances cost (cached - 1) x checks x mask bytes.
    VECTOR_FIFO = 64

    def feed_many(self, steps, inputs, stop_at_draw: bool = False) -> bool:
        """The loop of `update` over a block, vectorised: the block's check masks are packed to bits and each one's
        distance to the `cached - 1` masks before it (the FIFO's, then the block's own) is one XOR and popcount per
        lag over the whole block; the trace and the draw are then concluded check by check, as `update` does, and
        the FIFO is left holding the last masks fed. Large FIFOs (> VECTOR_FIFO) keep the incremental update."""
        masks = np.asarray(inputs, dtype=bool)
        if self.cached > self.VECTOR_FIFO or len(masks) < 2 or masks.ndim != 3:
            return super().feed_many(steps, inputs, stop_at_draw)
        if self._shape is not None and masks.shape[1:] != self._shape:
            raise EarlyBirdError(f"mask shape changed from {self._shape} to {masks.shape[1:]}")
        steps = [int(s) for s in steps][: len(masks)]
        observed, checks, previous = self.observed, self.checks, self._previous_step
        at = []  # the block's checks: (index in the block, observations so far, checks so far)
        for i, step in enumerate(steps):
            if previous is not None and step <= previous:
                raise EarlyBirdError(f"steps must increase: got step {step} after {previous}")
            check = self.checks_at(step, previous, observed)
            previous, observed, checks = step, observed + 1, checks + check
            if check:
                at.append((i, observed, checks))
        entries = int(np.prod(masks.shape[1:]))
        before = self._fifo_masks(entries)  # oldest first
        fresh = masks[[i for i, _, _ in at]].reshape(len(at), entries)
        packed = np.packbits(np.concatenate([before, fresh]), axis=1)
        newest = packed[len(before):]
        distance = np.zeros(len(at), dtype=np.int64)
        for lag in range(1, self.cached):
            if lag > len(before) + len(at) - 1:
                break
            first = max(0, lag - len(before))  # the first of the block's checks with a mask `lag` checks before it
            older = packed[len(before) + first - lag: len(packed) - lag]
            np.maximum(distance[first:], np.bitwise_count(newest[first:] ^ older).sum(axis=1, dtype=np.int64),
                       out=distance[first:])
        pushed = self._filled  # masks pushed before the block, as far as a full FIFO is concerned
        drew, last = False, len(steps) - 1
        for n, (i, self.observed, self.checks) in enumerate(at):
            if pushed + n + 1 < self.cached:
                continue
            value = float(distance[n]) / entries
            passed = self.passes_at(value, self.threshold)
            self.trace.append(self._entry(steps[i], value, passed))
            if self._conclude(steps[i], passed):
                drew = True
                if stop_at_draw:
                    last, at = i, at[: n + 1]
                    break
        stopped = drew and stop_at_draw
        self.observed, self.checks = (at[-1][1], at[-1][2]) if stopped else (observed, checks)
        self._previous_step = steps[last]
        if at:
            self._refill(np.concatenate([before, fresh[: len(at)]])[-self.cached:], masks.shape[1:])
        return drew

    def _fifo_masks(self, entries: int) -> np.ndarray:
        """The cached masks, oldest first, flattened: (filled, entries)."""
        if self._fifo is None:
            return np.zeros((0, entries), dtype=bool)
        order = [(self._newest - j) % self.cached for j in range(self._filled - 1, -1, -1)]
        return self._fifo[:, order].T

    def _refill(self, masks: np.ndarray, shape) -> None:
        """The FIFO holding exactly `masks` (oldest first; at most `cached`), as pushing them one by one leaves it."""
        self._fifo, self._filled, self._newest, self._shape = None, 0, -1, None
        self._distance[:] = 0
        for mask in masks:
            self._push(mask.reshape(shape))

    def max_distance(self) -> float | None:
        """Max normalised distance between the newest and the other cached masks (FIFO full)."""
        if self._filled < self.cached:
            return None
        return float(self._distance.max()) / self._fifo.shape[0]

    def update(self, step: int, mask) -> bool:
        if not self._observe_step(step):
            return False
        self._push(mask)
        distance = self.max_distance()
        if distance is None:
            return False
        passed = self.passes_at(distance, self.threshold)
        self.trace.append(self._entry(step, distance, passed))
        return self._conclude(step, passed)

    @staticmethod
    def passes_at(distance: float, threshold: float) -> bool:
        """The rule: the newest mask is within `threshold` of every cached one (strictly, as in You et al.)."""
        return bool(distance < threshold)

    def _entry(self, step: int, distance: float, passed: bool) -> dict:
        return {"step": int(step), "distance": distance, "passed": passed}

    def can_test(self, observed: int, checks: int) -> bool:
        return checks >= self.cached  # one mask enters the FIFO per check

    def needs(self) -> tuple[str, str]:
        return (f"cached={self.cached} masks in its FIFO, one per check every {self.every} steps "
                f"(at least {self.cached * self.every} steps)", "a smaller cached / every")


@register
class OriginalHammingEB(HammingEB):
    """The original code's Hamming rule (profile `original`): the check passes when the newest mask is within
    ``threshold`` of every cached one *inclusively* (distance <= threshold, so 0 is a valid threshold: identical
    masks); the reported number (`draw_index`, trace `index`) is the 0-based index of the record drawn at."""

    profile = "original"
    PARAMS = tuple(replace(p, interval="[0, 1]") if p.name == "threshold" else p for p in HammingEB.PARAMS)

    @staticmethod
    def passes_at(distance: float, threshold: float) -> bool:
        return bool(distance <= threshold)

    def _entry(self, step: int, distance: float, passed: bool) -> dict:
        return {"step": int(step), "index": self.observed - 1, "distance": distance, "passed": passed}

    def _conclude(self, step: int, passed: bool) -> bool:
        drew = super()._conclude(step, passed)
        if drew:
            self.draw_index = self.observed - 1
        return drew


def smooth_series(values, width: int) -> np.ndarray:
    """The stationarity detectors' smoothing over a whole series: at each step the mean of the last
    min(width, available) values, each mean an exact `math.fsum` (see StationarityEB)."""
    values = np.asarray(values, dtype=np.float64)
    return np.array([_trailing_mean(values[max(0, i + 1 - width):i + 1]) for i in range(len(values))])


def _trailing_mean(values) -> float:
    return math.fsum(values) / len(values)


STATIONARITY_PARAMS = (
    _param("smooth", int, 200, "moving-average length", minimum=1, steps=True, floor=5),
    _param("window", int, 300, "smoothed values tested", minimum=10, steps=True, floor=30),
    _param("alpha", float, 0.2, "p-value threshold", interval="(0, 1)"),
    replace(EVERY, default=100, steps=True, floor=5),
    PATIENCE,
)


class StationarityEB(Detector):
    """Draw when the smoothed nuclear norm of the mask looks stationary.

    Each observed step adds the mask's nuclear norm; the smoothed value is the mean of the
    last ``min(smooth, available)`` norms (so smoothed values exist from the first step: a
    shorter warm-up mean). At each check, once ``window`` smoothed values exist, the last
    ``window`` of them are tested. The mean is recomputed with ``math.fsum`` over the bounded
    deque instead of a running sum: a running sum drifts by rounding, which would turn a frozen
    mask into last-bit noise that trend tests read as a trend; this way a smoothed value is a
    pure function of its window. A window whose values are all equal is treated as
    stationary (no trend): it draws, without calling the test.
    """

    constant_p_value = 1.0
    uses_norm = True
    PARAMS = STATIONARITY_PARAMS

    def __init__(self, **params):
        super().__init__(**params)
        self._raw: deque = deque(maxlen=self.smooth)
        self._smoothed: deque = deque(maxlen=self.window)

    def can_test(self, observed: int, checks: int) -> bool:
        return observed >= self.window  # one smoothed value per observed step

    def needs(self) -> tuple[str, str]:
        return (f"window={self.window} observed steps and then a check (every {self.every} steps)",
                "a smaller window / every")

    def update(self, step: int, mask) -> bool:
        return self.update_value(step, nuclear_norm(as_numpy(mask)))

    def update_value(self, step: int, value: float) -> bool:
        """Feed one step's nuclear norm directly (what ``update`` does after computing it)."""
        check = self._observe_step(step)
        value = float(value)
        if not math.isfinite(value):
            raise EarlyBirdError(f"nuclear norm at step {step} is not finite: {value}")
        self._raw.append(value)
        self._smoothed.append(_trailing_mean(self._raw))
        if not check or len(self._smoothed) < self.window:
            return False
        window = np.fromiter(self._smoothed, dtype=np.float64, count=self.window)
        if window.min() == window.max():
            statistic, p_value, constant = None, self.constant_p_value, True
        else:
            statistic, p_value = self.test(window)
            constant = False
        passed = self.passes(p_value)
        self.trace.append({"step": int(step), "statistic": statistic, "p_value": p_value,
                           "passed": passed, "constant": constant})
        return self._conclude(step, passed)

    def smoothed_window(self) -> np.ndarray:
        return np.fromiter(self._smoothed, dtype=np.float64, count=len(self._smoothed))

    def passes(self, p_value: float) -> bool:
        """Trend tests: no evidence of a trend (p > alpha) means stationary."""
        return bool(p_value > self.alpha)

    def test(self, window: np.ndarray) -> tuple:
        """(statistic, p-value) for a non-constant window."""
        raise NotImplementedError


def default_maxlags(n: int) -> int:
    """Newey-West rule of thumb: floor(4 (n / 100)^(2/9)); 5 for a 300-value window."""
    return int(math.floor(4.0 * (n / 100.0) ** (2.0 / 9.0)))


@register
class SlopeEB(StationarityEB):
    """OLS of the window on time (0..window-1) with Newey-West (HAC) standard errors; draw when
    the slope's p-value > alpha (0.2). ``maxlags=None`` uses :func:`default_maxlags`."""

    method = "slope"
    title = "sliding-window regression (HAC p-value)"
    PARAMS = STATIONARITY_PARAMS + (
        _param("maxlags", int, None, "HAC lags (default: floor(4 (window/100)^(2/9)))", minimum=0, optional=True),)

    def params(self) -> dict:
        return {**super().params(), "maxlags": self.maxlags if self.maxlags is not None else default_maxlags(self.window)}

    def test(self, window):
        return slope_test(window, self.maxlags if self.maxlags is not None else default_maxlags(len(window)))


def slope_test(window: np.ndarray, maxlags: int | None = None) -> tuple[float, float]:
    """(slope, p-value) of the OLS of the window on time 0..n-1: Newey-West (HAC) standard errors with `maxlags`
    lags, or the plain OLS ones with None (the original profile)."""
    # statsmodels.api would import all of statsmodels (~1.5 s); the regression module is all this needs
    from statsmodels.regression.linear_model import OLS

    time = np.column_stack([np.ones(len(window)), np.arange(len(window), dtype=np.float64)])  # sm.add_constant's
    model = OLS(window, time)
    fit = model.fit() if maxlags is None else model.fit(cov_type="HAC", cov_kwds={"maxlags": maxlags})
    return float(fit.params[1]), float(fit.pvalues[1])


@register
class MannKendallEB(StationarityEB):
    """Mann-Kendall trend test (pymannkendall.original_test); draw when p > alpha (0.2).
    The trace statistic is the test's z."""

    method = "mk"
    title = "Mann-Kendall trend test"

    def test(self, window):
        import pymannkendall

        outcome = pymannkendall.original_test(window)
        return float(outcome.z), float(outcome.p)


@register
class ADFEB(StationarityEB):
    """Augmented Dickey-Fuller unit-root test (statsmodels adfuller); draw when p < alpha
    (0.05): a rejected unit root means stationary. A constant window gets p = 0.0."""

    method = "adf"
    title = "ADF unit-root test"
    constant_p_value = 0.0
    PARAMS = tuple(replace(p, default=0.05) if p.name == "alpha" else p for p in STATIONARITY_PARAMS) + (
        _param("regression", str, "c", "adfuller's deterministic terms", choices=("c", "ct", "ctt", "n")),
        _param("autolag", str, "AIC", "adfuller's lag selection (none: maxlag lags)", choices=("AIC", "BIC", "t-stat"),
               optional=True),
        _param("maxlag", int, None, "adfuller's largest lag (default: its rule of thumb)", minimum=0, optional=True),
    )

    def passes(self, p_value: float) -> bool:
        return bool(p_value < self.alpha)

    def test(self, window):
        try:
            return adf_test(window, self.maxlag, self.regression, self.autolag)
        except (ValueError, np.linalg.LinAlgError) as exc:
            raise EarlyBirdError(f"adf test failed on a {len(window)}-value window ({exc}); "
                                 "use a larger window or a smaller maxlag") from None


def adf_test(window: np.ndarray, maxlag, regression: str, autolag) -> tuple[float, float]:
    """(statistic, p-value) of statsmodels' adfuller; its exceptions propagate."""
    from statsmodels.tools.sm_exceptions import SingularMatrixWarning
    from statsmodels.tsa.stattools import adfuller

    # The smoothed norm of a 0/1 mask is piecewise linear, so the lagged differences in
    # ADF's regressions are often exactly collinear (SingularMatrixWarning) or fit exactly
    # (log(0) in the AIC: RuntimeWarning); statsmodels still returns its estimate, which is
    # what we use. Silencing them here keeps a scan from printing hundreds of warnings.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SingularMatrixWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        outcome = adfuller(window, maxlag=maxlag, regression=regression, autolag=autolag, result_object=True)
    return float(outcome.statistic), float(outcome.pvalue)


# --------------------------------------------------------------------------- the original profile's windows


class WindowedStationarityEB(Detector):
    """The original research code's stationarity detectors (profile `original`), counted in records.

    The series is the nuclear norm of the mask of every record except the first and the last: norm `j` is record
    `j + 1`'s. With `smooth` S, `window` W and `every` E (the study's 200 / 300 / 100) window k of the series is

    * k = 0: norms [0, W + S - 1), smoothed with a 'valid' moving average of S (W values);
    * k >= 1: norms [kE, kE + W - 1), smoothed the same way (W - S values);

    and S = 0 means not smoothed (the FFN series: W - 1 raw values in every window). The original's loop tests
    window k only while its end (W + S - 1 for k = 0, kE + W - 1 after) is below the series' length, and the series
    stops one record before the last: window k is therefore decided at record index max(W + S - 1, kE + W - 1) + 2,
    the first record at which the original code, run on the records so far, tests it (several windows can be
    decided at one record: with the study's values windows 0, 1 and 2 at record 501). That record's step is the
    trace's `step` and the draw step; `index` (and `draw_index`) is the number the original prints for window k,
    (k + 1)E + W - 1 (399, 499, ... with the study's values), an index into the norm series. A test's exception
    counts as p = 0 (as the original's ADF try/except does). On a constant window the slope's p-value is NaN (never
    passes, see OriginalSlopeEB), Mann-Kendall's is 1 (passes) and ADF raises (p = 0: passes).
    """

    profile = "original"
    uses_norm = True
    PARAMS = tuple(
        replace(p, minimum=0, help="moving-average length ('valid' convolution; 0: not smoothed)")
        if p.name == "smooth" else replace(p, default=0.1) if p.name == "alpha" else p
        for p in STATIONARITY_PARAMS)
    BLOCK_DEFAULTS = {"mlp": {"smooth": 0}}  # the original code does not smooth the FFN masks' norms
    MIN_VALUES = 10  # a window's fewest values (the paper's smallest window)

    def __init__(self, **params):
        super().__init__(**params)
        later = self.window - self.smooth if self.smooth else self.window - 1
        if later < self.MIN_VALUES:
            raise EarlyBirdError(f"window {self.window} with smooth {self.smooth}: under profile original the windows "
                                 f"after the first hold window - smooth = {later} values; expected at least "
                                 f"{self.MIN_VALUES} (window >= smooth + {self.MIN_VALUES})")
        self._norms: deque = deque(maxlen=self.window + self.smooth + 1)
        self._length = 0  # the norm series' length so far
        self._next = 0  # the next window to test

    def bounds(self, k: int) -> tuple[int, int]:
        """Window k's [start, stop) in the norm series."""
        if k == 0:
            return 0, self.window + self.smooth - 1
        return k * self.every, k * self.every + self.window - 1

    def due(self, k: int) -> int:
        """The record index at which window k is decided (see the class docstring)."""
        return max(self.bounds(0)[1], self.bounds(k)[1]) + 2

    def reported_index(self, k: int) -> int:
        """The number the original code prints for window k."""
        return (k + 1) * self.every + self.window - 1

    def checks_at(self, step: int, previous: int | None, index: int) -> bool:
        first = self.due(0)
        # after the first, window k >= 1 is due at record k * every + window + 1
        return index == first or (index > first and (index - self.window - 1) % self.every == 0)

    def can_test(self, observed: int, checks: int) -> bool:
        return True  # a check is a record at which a window is due

    def needs(self) -> tuple[str, str]:
        return (f"{self.due(0) + 1} records (its first window: {self.bounds(0)[1]} norms from the second record on, "
                "then the two records the original code's loop does not read)", "a smaller window / smooth")

    def update(self, step: int, mask) -> bool:
        return self.update_value(step, nuclear_norm(as_numpy(mask)))

    def update_value(self, step: int, value: float) -> bool:
        """Feed one record's nuclear norm (the first record's is not part of the series)."""
        check = self._observe_step(step)
        index = self.observed - 1
        value = float(value)
        if not math.isfinite(value):
            raise EarlyBirdError(f"nuclear norm at step {step} is not finite: {value}")
        if index == 0:
            return False
        self._norms.append(value)
        self._length += 1
        drew = False
        while check and self.due(self._next) <= index:
            k, self._next = self._next, self._next + 1
            window = self.window_values(k)
            try:
                statistic, p_value = self.test(window)
            except Exception:  # noqa: BLE001 - the original code's rule: a failed test counts as p = 0
                statistic, p_value = None, 0.0
            passed = self.passes(p_value)
            self.trace.append({"step": int(step), "index": self.reported_index(k), "statistic": statistic,
                               "p_value": p_value, "passed": passed, "constant": bool(window.min() == window.max())})
            if self._conclude(step, passed):
                self.draw_index = self.reported_index(k)
                drew = True
        return drew

    def window_values(self, k: int) -> np.ndarray:
        """Window k's values (smoothed unless smooth is 0), from the norms kept."""
        start, stop = self.bounds(k)
        first = self._length - len(self._norms)  # series index of the oldest norm kept
        raw = np.fromiter(itertools.islice(self._norms, start - first, stop - first), dtype=np.float64)
        return np.convolve(raw, np.ones(self.smooth) / self.smooth, mode="valid") if self.smooth else raw

    passes = StationarityEB.passes

    def test(self, window: np.ndarray) -> tuple:
        raise NotImplementedError


@register
class OriginalSlopeEB(WindowedStationarityEB):
    """Plain OLS of the window on time (no HAC); draw when the slope's p-value > alpha (0.1).

    On a constant window the slope and its standard error are both exactly 0, so the p-value is 0/0: NaN, which
    never passes. (statsmodels' least squares returns rounding noise there instead -- a slope of ~1e-17 and a
    p-value anywhere in (0, 1) depending on the value and the length -- which is not a result to reproduce.)
    """

    method = "slope"
    title = "sliding-window regression (OLS p-value)"

    def test(self, window):
        if window.min() == window.max():
            return 0.0, math.nan
        return slope_test(window)


@register
class OriginalMannKendallEB(WindowedStationarityEB):
    """pymannkendall's original test; draw when p > alpha (0.1)."""

    method = "mk"
    title = MannKendallEB.title
    test = MannKendallEB.test


@register
class OriginalADFEB(WindowedStationarityEB):
    """statsmodels' adfuller (autolag AIC, regression c); draw when p < alpha (0.05); an exception is p = 0."""

    method = "adf"
    title = ADFEB.title
    PARAMS = tuple(replace(p, default=0.05) if p.name == "alpha" else p for p in WindowedStationarityEB.PARAMS) + tuple(
        p for p in ADFEB.PARAMS if p.name not in WindowedStationarityEB.param_spec())
    passes = ADFEB.passes

    def test(self, window):
        return adf_test(window, self.maxlag, self.regression, self.autolag)


def make_detector(method: str, profile: str | None = None, block: str | None = None, **params) -> Detector:
    """A fresh detector from the registry of `profile` (None: the default); `block` selects the variant's
    per-block defaults (`BLOCK_DEFAULTS`). EarlyBirdError for unknown methods or parameters."""
    cls = detector_class(method, profile)
    defaults = cls.BLOCK_DEFAULTS.get(block, {}) if block else {}
    try:
        return cls(**{**defaults, **params})
    except TypeError as exc:
        raise EarlyBirdError(f"bad parameters for method {method!r}: {exc}") from None


def first_test_step(detector: "Detector", steps) -> int | None:
    """The first of ``steps`` (the observed steps, increasing) at which ``detector`` can run its test, or None.

    A pure function of the detector's parameters (its state is not touched): its check clock (`checks_at`), and
    its own `can_test` (Hamming once its FIFO is full, a stationarity test once it has a window). None means it can
    never draw on these steps.
    """
    previous = None
    observed = checks = 0
    for step in steps:
        step = int(step)
        check = detector.checks_at(step, previous, observed)
        previous = step
        observed += 1
        checks += check
        if check and detector.can_test(observed, checks):
            return step
    return None


def first_test_if_longer(detector: "Detector", steps, limit: int = 1_000_000) -> int | None:
    """The step of `detector`'s first test if the observations went on past ``steps`` at their last stride (the
    recording cadence; 1 for a single step): the step a longer run must reach for it to test at all. None when it
    would not test within `limit` more observations."""
    steps = [int(s) for s in np.asarray(steps).reshape(-1)]
    stride = steps[-1] - steps[-2] if len(steps) > 1 else 1
    more = itertools.count((steps[-1] if steps else 0) + stride, stride)
    return first_test_step(detector, itertools.islice(itertools.chain(steps, more), len(steps) + limit))


def never_tests_message(detector: "Detector", steps, what: str) -> str | None:
    """One line explaining why ``detector`` can never test on ``steps`` (None when it can), with the arithmetic: the
    step of its first test, which a longer run must reach."""
    steps = np.asarray(steps).reshape(-1)
    if first_test_step(detector, steps) is not None:
        return None
    span = f"steps {int(steps[0])}..{int(steps[-1])}" if len(steps) else "no steps"
    need, fix = detector.needs()
    first = first_test_if_longer(detector, steps)
    longer = "a longer run" if first is None else f"a longer run (one reaching step {first})"
    return (f"the {detector.method} detector can never test on {what} ({len(steps)} observed, {span}): it needs "
            f"{need}" + ("" if first is None else f", so its first test would be at step {first}")
            + f"; expected {fix} or {longer}")


# --------------------------------------------------------------------------- offline


def _as_records(records) -> Records:
    return records if isinstance(records, Records) else load_records(records)


def _step_blocks(coefs: np.ndarray):
    per = max(1, _SCAN_ELEMENTS // max(1, coefs.shape[1] * coefs.shape[2]))
    for start in range(0, coefs.shape[0], per):
        yield start, min(start + per, coefs.shape[0])


def _mask_workers() -> int:
    """Threads computing masks ahead of the detectors: two where the process may use two cores or more."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return 2 if cores >= 2 else 1


def _mask_blocks(coefs: np.ndarray, ratio: float, scope: str, rule: str, norms_wanted, **structure):
    """(start, stop, masks, norms or None) for each block of steps, in order; the following blocks' masks (and norms,
    when `norms_wanted()` says so as a block is queued) are computed in background threads -- one per core, up to
    two -- while the caller feeds this one to its detectors. numpy's partitions and LAPACK's eigen-solvers release
    the GIL and the detectors' updates are Python, so a scan takes about the longest of them instead of their sum;
    the values are the same."""
    from collections import deque as queue
    from concurrent.futures import ThreadPoolExecutor

    def compute(start: int, stop: int, norms: bool):
        masks = compute_mask(coefs[start:stop], ratio, scope, rule, **structure)
        return start, stop, masks, nuclear_norm(masks) if norms else None

    blocks = iter(_step_blocks(coefs))
    workers = _mask_workers()
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="earlybird-masks") as pool:
        pending = queue(pool.submit(compute, *block, norms_wanted()) for block in itertools.islice(blocks, workers))
        while pending:
            current = pending.popleft().result()
            following = next(blocks, None)
            if following is not None:
                pending.append(pool.submit(compute, *following, norms_wanted()))
            yield current


def _feed_block(detector: Detector, steps, inputs, stop_at_draw: bool) -> bool:
    """Feed one block of steps' inputs (nuclear norms for `uses_norm` detectors, else masks); True if it drew."""
    return detector.feed_many(steps, inputs, stop_at_draw)


def feed(detector: Detector, steps, masks, *, stop_at_draw: bool = False) -> bool:
    """Feed a batch of masks (K, L, N) at ``steps`` to a detector; True if it drew.

    With ``stop_at_draw`` the rest of the batch is not fed once the detector draws.
    """
    return _feed_block(detector, steps, nuclear_norm(masks) if detector.uses_norm else masks, stop_at_draw)


def detect(records, block: str = "msa", ratio: float = 0.3, scope: str | None = None, method: str = "slope",
           *, stop_at_draw: bool = True, profile: str | None = None, gqa_rule: str = DEFAULT_GQA_RULE,
           **params) -> DetectionResult:
    """Run a detector over recorded coefficients; offline == online by construction.

    Masks are computed with :func:`compute_mask` (the profile's mask rule; ``scope=None``: the profile's default
    scope for the block) in vectorised blocks of steps (and, for the stationarity methods, their nuclear norms in one
    stacked SVD per block); the detector is then fed step by step with the records' own step numbers.
    ``stop_at_draw=False`` keeps feeding after the draw to produce the full trace. The heads of a model with
    grouped-query attention (the records' meta) get masks that keep the GQA rule, chosen by ``gqa_rule``.
    """
    return detect_many(records, block, ratio, scope, {method: params}, stop_at_draw=stop_at_draw,
                       profile=profile, gqa_rule=gqa_rule)[method]


def detect_many(records, block: str, ratio: float, scope: str | None, methods: dict, *,
                stop_at_draw: bool = True, profile: str | None = None,
                gqa_rule: str = DEFAULT_GQA_RULE) -> dict[str, DetectionResult]:
    """Several detectors over the same records in one pass: {method: its parameters} -> {method: result}.

    Each block of steps' masks (and their nuclear norms, when a detector needs them) is computed once and fed to
    every detector still running, so the results are those of separate :func:`detect` calls at a fraction of
    the cost. With ``stop_at_draw`` a detector stops being fed at its draw and the pass ends when all have drawn.
    """
    records = _as_records(records)
    ratio = check_ratio(ratio)
    profile = get_profile(profile)
    coefs = records.block(block)
    scope = check_scope(profile.scope(block, scope))
    detectors = {method: make_detector(method, profile.name, block, **params) for method, params in methods.items()}

    def running() -> list:
        return [d for d in detectors.values() if not (stop_at_draw and d.draw_step is not None)]

    blocks = _mask_blocks(coefs, ratio, scope, profile.mask_rule, lambda: any(d.uses_norm for d in running()),
                          group_size=records.group_size(block), gqa_rule=check_gqa_rule(gqa_rule))
    for start, stop, masks, norms in blocks:
        live = running()
        if not live:
            blocks.close()
            break
        steps = records.steps[start:stop]
        for detector in live:
            _feed_block(detector, steps, norms if detector.uses_norm else masks, stop_at_draw)
    return {method: d.result(records.total_steps, block=block, ratio=ratio, scope=scope)
            for method, d in detectors.items()}


def hamming_table(records, block: str = "msa", ratios=(0.3, 0.8), cached=(5, 50, 100, 500, 2000),
                  thresholds=(0.1, 0.01), scope: str | None = None, every: int = 1, profile: str | None = None,
                  indices: bool = False, gqa_rule: str = DEFAULT_GQA_RULE) -> dict:
    """Draw steps of the Hamming rule for every (ratio, cached, threshold): {(r, n, eps): step}.

    Masks are computed once per ratio and fed to one detector per FIFO size. The FIFO does not
    depend on the threshold, so one detector run with the smallest threshold (the last to draw)
    yields every threshold's draw: the first trace entry that passes it -- the same step a separate run with
    that threshold draws at (patience 1). ``indices=True`` gives the record indices instead (the numbers the
    original code prints; under a profile that reports indices).
    """
    records = _as_records(records)
    profile = get_profile(profile)
    cls = detector_class("hamming", profile.name)
    thresholds = [cls.param_spec()["threshold"].check(t) for t in thresholds]
    coefs = records.block(block)
    scope = check_scope(profile.scope(block, scope))
    smallest = min(thresholds)
    table = {}
    for ratio in ratios:
        ratio = check_ratio(ratio)
        detectors = {int(n): make_detector("hamming", profile.name, block, cached=int(n), threshold=smallest,
                                           every=every) for n in cached}
        for start, stop in _step_blocks(coefs):
            live = [d for d in detectors.values() if d.draw_step is None]
            if not live:
                break
            masks = compute_mask(coefs[start:stop], ratio, scope, profile.mask_rule,
                                 group_size=records.group_size(block), gqa_rule=gqa_rule)
            for d in live:
                feed(d, records.steps[start:stop], masks, stop_at_draw=True)
        for n, d in detectors.items():
            for eps in thresholds:
                hit = next((e for e in d.trace if d.passes_at(e["distance"], eps)), None)
                table[(ratio, n, eps)] = None if hit is None else (
                    records.index_of_step(hit["step"]) if indices else hit["step"])
    return table


# --------------------------------------------------------------------------- online


class OnlineEarlyBird:
    """Online detection in a plain training loop, from the current coefficient tensors.

    ``observe(step, msa=..., mlp=...)`` takes (L, H) / (L, I) tensors or arrays for the
    configured block(s) at every step (they must be on the host or are copied there: one sync
    per call). To avoid a per-step sync on GPU, collect coefficients on device and call
    ``observe_many(steps, msa=(K, L, H), mlp=(K, L, I))`` every K steps (for example with the
    chunk a CoefficientRecorder just flushed); the result is identical. With several blocks,
    each has its own detector and the draw is the step at which the last of them draws.

    ``profile`` selects the detection profile (mask rule, detector variant, default scopes: ``scope=None`` uses
    the profile's default for each block); ``block_params`` ({block: {name: value}}) sets parameters for one block
    only, under the common ``params``. ``group_size`` (query heads per KV head, > 1 under grouped-query attention)
    and ``gqa_rule`` make the head masks keep the GQA rule, as `detect` does from the records' meta.
    """

    def __init__(self, block="msa", ratio: float = 0.3, scope: str | None = None, method: str = "slope", *,
                 profile: str | None = None, block_params: dict | None = None, group_size: int = 1,
                 gqa_rule: str = DEFAULT_GQA_RULE, **params):
        self.blocks = (block,) if isinstance(block, str) else tuple(block)
        for name in self.blocks:
            if name not in ("msa", "mlp"):
                raise EarlyBirdError(f"block must be 'msa' or 'mlp'; got {name!r}")
        if not self.blocks:
            raise EarlyBirdError("OnlineEarlyBird needs at least one block")
        self.profile = get_profile(profile)
        self.ratio = check_ratio(ratio)
        self.scopes = {name: check_scope(self.profile.scope(name, scope)) for name in self.blocks}
        self.method = method
        self.structure = {"msa": {"group_size": group_size, "gqa_rule": check_gqa_rule(gqa_rule)}, "mlp": {}}
        self.detectors = {name: make_detector(method, self.profile.name, name,
                                              **{**(block_params or {}).get(name, {}), **params})
                          for name in self.blocks}
        self.draw_step: int | None = None

    @property
    def scope(self) -> str:
        """The masks' scope (of the only block, or the one all blocks share)."""
        scopes = set(self.scopes.values())
        if len(scopes) > 1:
            raise EarlyBirdError(f"the blocks' scopes differ ({self.scopes}); see .scopes")
        return scopes.pop()

    def checks_at(self, step: int, previous: int | None, index: int) -> bool:
        """Whether observing `step` (the index-th observation, after `previous`) is a check of some block's detector:
        the steps a caller that buffers coefficients must feed at (see Detector.checks_at)."""
        return any(d.checks_at(step, previous, index) for d in self.detectors.values())

    def _coefs(self, given: dict) -> dict:
        missing = [name for name in self.blocks if given.get(name) is None]
        if missing:
            raise EarlyBirdError(f"observe(): missing coefficients for {', '.join(missing)}")
        return {name: as_numpy(given[name]) for name in self.blocks}

    def _settle(self, step: int) -> bool:
        if self.draw_step is None and all(d.draw_step is not None for d in self.detectors.values()):
            self.draw_step = int(step)
            return True
        return False

    def _masks(self, name: str, coefs) -> np.ndarray:
        return compute_mask(coefs, self.ratio, self.scopes[name], self.profile.mask_rule, **self.structure[name])

    def observe(self, step: int, msa=None, mlp=None) -> bool:
        """Feed one step; True at the step the early bird is drawn."""
        coefs = self._coefs({"msa": msa, "mlp": mlp})
        for name, detector in self.detectors.items():
            feed(detector, [step], self._masks(name, coefs[name][None]))
        return self._settle(step)

    def observe_many(self, steps, msa=None, mlp=None) -> bool:
        """Feed K steps at once from stacks (K, L, n); True if the draw happened among them."""
        coefs = self._coefs({"msa": msa, "mlp": mlp})
        steps = [int(s) for s in np.asarray(steps).reshape(-1)]
        masks = {name: self._masks(name, coefs[name]) for name in self.blocks}
        for name, m in masks.items():
            if m.ndim != 3 or m.shape[0] != len(steps):
                raise EarlyBirdError(f"observe_many(): {name} must be (steps, layers, n) with {len(steps)} steps; "
                                     f"got {coefs[name].shape}")
        inputs = {name: nuclear_norm(masks[name]) if self.detectors[name].uses_norm else masks[name]
                  for name in self.blocks}
        drew = False
        # Step by step across blocks so the combined draw step is exact.
        for i, step in enumerate(steps):
            for name, detector in self.detectors.items():
                _feed_block(detector, [step], inputs[name][i:i + 1], stop_at_draw=False)
            drew |= self._settle(step)
        return drew

    @property
    def drawn(self) -> bool:
        return self.draw_step is not None

    def result(self, block: str | None = None) -> DetectionResult:
        """The detection result of one block (the only one by default)."""
        if block is None:
            if len(self.blocks) > 1:
                raise EarlyBirdError(f"several blocks are observed ({', '.join(self.blocks)}); name one")
            block = self.blocks[0]
        if block not in self.detectors:
            raise EarlyBirdError(f"block {block!r} is not observed")
        return self.detectors[block].result(block=block, ratio=self.ratio, scope=self.scopes[block])
