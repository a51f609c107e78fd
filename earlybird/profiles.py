"""Detection profiles: one name for a whole set of detection semantics.

A profile fixes, in one place,

* the **mask rule** (`earlybird.masks.MASK_RULES`): how coefficients become a mask;
* the **default scopes**: masks per layer or over all layers, per block, used when the user names none;
* each **detector's variant** and its default parameters: the detector classes registered under the profile's
  name (`earlybird.detectors.register`, a class attribute `profile`), with per-block defaults
  (`Detector.BLOCK_DEFAULTS`);
* the **series and window rules** of the stationarity detectors (part of their variant);
* the **reporting**: whether results also carry `draw_index`, the number the original research code prints.

Two profiles exist:

* `paper` (the default): the case study's text -- |coefficient|, `round(ratio * n)` pruned per layer (keeping
  each layer's largest), a trailing moving average, HAC slope test, p > 0.2 / p > 0.2 / p < 0.05;
* `original`: what the original research code's notebooks compute, from which the study's figures and tables
  came -- signed coefficients, numpy's quantile as the threshold, FFN masks global, the inclusive Hamming
  threshold, the norm series without its first and last records, 'valid' moving-average windows, plain OLS,
  p > 0.1 / p > 0.1 / p < 0.05, record indices reported.

docs/library.md ("Detection profiles") describes both rule by rule. Every path that detects or prunes takes a
`profile=` name (`detect`, `detect_many`, `hamming_table`, `OnlineEarlyBird`, `make_plan`, `earlybird ...
--profile`, EB-Train's `--eb-profile`, `reproduce --profile`, `build_report(profile=)`) and records it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

from .errors import EarlyBirdError

DEFAULT_PROFILE = "paper"


@dataclass(frozen=True)
class Profile:
    name: str
    summary: str  # one line, for help texts and report headers
    mask_rule: str  # one of earlybird.masks.MASK_RULES
    scopes: Mapping[str, str] = field(default_factory=dict)  # block -> default scope
    reports_index: bool = False  # results carry `draw_index` (the original code's printed number)
    importance: str = "|coefficient|"  # what the masks rank, in words (report header)

    def __post_init__(self):
        object.__setattr__(self, "scopes", MappingProxyType(dict(self.scopes)))

    def scope(self, block: str, given: str | None = None) -> str:
        """The scope of `block`'s masks: the one given, else this profile's default."""
        return given if given is not None else self.scopes[block]

    @property
    def detectors(self) -> dict:
        """{method: detector class} of this profile (the variants registered under its name)."""
        from .detectors import VARIANTS

        return VARIANTS.setdefault(self.name, {})


PROFILES: dict[str, Profile] = {}


def register_profile(profile: Profile) -> Profile:
    PROFILES[profile.name] = profile
    return profile


PAPER = register_profile(Profile(
    name="paper",
    summary="the case study's text: |coefficient|, round(ratio*n) pruned per layer, trailing moving average, "
            "HAC slope, p > 0.2 / 0.2 / < 0.05",
    mask_rule="magnitude",
    scopes={"msa": "layerwise", "mlp": "layerwise"},
))

ORIGINAL = register_profile(Profile(
    name="original",
    summary="the original research code's notebooks: signed coefficient <= numpy quantile pruned, FFN masks "
            "global, inclusive Hamming threshold, 'valid' moving-average windows, plain OLS, p > 0.1 / 0.1 / < 0.05, "
            "record indices reported",
    mask_rule="quantile",
    scopes={"msa": "layerwise", "mlp": "global"},
    reports_index=True,
    importance="the signed coefficient",
))

PROFILE_NAMES = tuple(PROFILES)


def get_profile(profile: str | Profile | None = None) -> Profile:
    """The profile of that name (None: the default); EarlyBirdError naming the choices for an unknown one."""
    if isinstance(profile, Profile):
        return profile
    name = DEFAULT_PROFILE if profile is None else profile
    try:
        return PROFILES[name]
    except (KeyError, TypeError):
        raise EarlyBirdError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}") from None
