"""EB-Train: run an early-bird detector while training with slimming, and prune in place when it draws.

Feeding the detector. The coefficients of each recorded step stay on the device in a small buffer; the
buffer goes to the detector (one host transfer) at the steps where the detector *checks* (its clock,
`Detector.checks_at`: the `every` clock, or under the original profile the records at which a window is
decided, see earlybird.detectors), because a detector can only draw at a check. The draw is therefore
seen at the very step it happens, with one sync per `every` steps instead of one per step (Hamming
checks every step by default: that is one small sync per step, the method's own cost).

The plan at the draw comes from the coefficients of the draw step with earlybird's mask function
(`make_plan`, the profile's mask rule), the same plan `earlybird plan --profile P` would write from the
records at that step.

Under several processes every process runs the same detector on the same (all-reduced) coefficients,
and the main process's decision and plan are broadcast, so all prune at the same step.
"""

from __future__ import annotations

import numpy as np
import torch

from ..blocks import BLOCKS
from ..detectors import OnlineEarlyBird, never_tests_message
from ..errors import EarlyBirdError
from ..plans import plan_from_coefficients
from ..records import derived_meta
from .config import EBConfig, PruningConfig


class EBTrain:
    def __init__(self, eb: EBConfig, pruning: PruningConfig, total_steps: int, record_every: int = 1,
                 num_processes: int = 1, group_size: int = 1):
        self.config = eb
        self.pruning = pruning
        self.record_every = record_every
        self.total_steps = total_steps
        self.blocks = eb.blocks
        self.ratio = eb.ratio(pruning)
        params = {block: eb.detector_params(total_steps, block) for block in self.blocks}
        lines = dict.fromkeys(line for _, line in params.values() if line)  # one per distinct scaling
        self.scaling = "; ".join(lines) if lines else None
        self.detector = OnlineEarlyBird(block=self.blocks, ratio=self.ratio, scope=eb.eb_scope, method=eb.eb_method,
                                        profile=eb.eb_profile, group_size=group_size, gqa_rule=pruning.gqa_rule,
                                        block_params={block: p for block, (p, _) in params.items()})
        self.num_processes = num_processes
        self._steps: list[int] = []
        self._buffer: dict[str, list] = {b: [] for b in BLOCKS}
        self._last_observed: int | None = None
        self._observed = 0  # records observed: the index of the next one (the original profile's clock)
        self.draw_step: int | None = None
        self.draw_coefficients: dict | None = None

    def never_tests(self) -> str | None:
        """Why the detector could never test in this run (e.g. a window longer than it), or None: one line, naming
        no flag (EB-Train's and the Trainer callback's wordings add their own)."""
        total = self.total_steps
        observed = range(self.record_every, total + 1, self.record_every)
        for detector in self.detector.detectors.values():
            message = never_tests_message(detector, observed, f"this run's {total} steps "
                                                              f"(recorded every {self.record_every})")
            if message:
                return message
        return None

    def check_budget(self) -> None:
        """Refuse, before training, a detector that could never test in this run."""
        message = self.never_tests()
        if message:
            hint = "" if self.config.eb_scale else ", or --eb-scale to scale the study's parameters to this run"
            raise EarlyBirdError(f"--eb-method {self.config.eb_method}: {message} (the --eb- flags of those "
                                 f"parameters{hint})")

    @property
    def params(self) -> dict:
        """The detector's parameters (every block's detector has the same), scaled ones included."""
        return next(iter(self.detector.detectors.values())).params()

    @property
    def drawn(self) -> bool:
        return self.draw_step is not None

    def observe(self, step: int, msa, mlp) -> bool:
        """Buffer one step's coefficients (device tensors); True at the step the early bird is drawn."""
        if self.drawn:
            return False
        self._steps.append(int(step))
        self._buffer["msa"].append(msa)
        self._buffer["mlp"].append(mlp)
        check = self.detector.checks_at(step, self._last_observed, self._observed)
        self._last_observed = int(step)
        self._observed += 1
        # A cap keeps the buffer bounded whatever `every` is; feeding early changes nothing but timing.
        if check or len(self._steps) >= 1024:
            return self._feed()
        return False

    def _feed(self) -> bool:
        stacks = {b: torch.stack(self._buffer[b]).float().cpu().numpy() for b in self.blocks}
        steps = self._steps
        drew = self.detector.observe_many(steps, **stacks)
        if drew:
            row = steps.index(self.detector.draw_step)
            self.draw_coefficients = {b: None if self._buffer[b][row] is None else
                                      self._buffer[b][row].float().cpu().numpy() for b in BLOCKS}
        drew = self._agree(drew)
        self._steps, self._buffer = [], {b: [] for b in BLOCKS}
        return drew

    def _agree(self, drew: bool) -> bool:
        """Every process takes the main process's decision (and coefficients), so all prune together."""
        if self.num_processes > 1:
            from accelerate.utils import broadcast_object_list

            message = [self.detector.draw_step if drew else None, self.draw_coefficients if drew else None]
            broadcast_object_list(message, from_process=0)
            drew = message[0] is not None
            if drew:
                self.detector.draw_step = message[0]
                self.draw_coefficients = message[1]
        if drew:
            self.draw_step = int(self.detector.draw_step)
        return drew

    def replay(self, records, up_to_step: int) -> None:
        """On resume: feed the recorded coefficients up to the checkpoint again (the detector is deterministic)."""
        keep = np.flatnonzero(records.steps <= up_to_step)
        if not len(keep):
            return
        for b in self.blocks:
            if getattr(records, b) is None:
                raise EarlyBirdError(f"--resume: {records.path} hold no {b} coefficients for the detector")
        stacks = {b: np.asarray(getattr(records, b)[keep]) for b in self.blocks}
        steps = [int(s) for s in records.steps[keep]]
        if self.detector.observe_many(steps, **stacks):
            raise EarlyBirdError(f"--resume: the detector draws at step {self.detector.draw_step} on the records, "
                                 "but the checkpoint is from before the draw: records and checkpoint disagree")
        self._last_observed = steps[-1]
        self._observed = len(steps)

    @property
    def scope(self):
        """The detector's mask scope: one name, or {block: scope} when the watched blocks' scopes differ."""
        scopes = self.detector.scopes
        return next(iter(scopes.values())) if len(set(scopes.values())) == 1 else dict(scopes)

    def plan(self, shape: dict, meta: dict) -> dict:
        """The in-place pruning plan from the draw step's coefficients."""
        coefficients = {name: (self.draw_coefficients or {}).get(name) for name in BLOCKS}
        meta = {**derived_meta(coefficients.get("msa"), coefficients.get("mlp")), **meta}
        plan = plan_from_coefficients(coefficients, self.draw_step, self.pruning.ratios, self.pruning.scopes,
                                      layers=shape["layers"], meta=meta, profile=self.config.eb_profile,
                                      **self.pruning.structure)
        plan["shape"] = {**shape, **{k: v for k, v in plan["shape"].items() if v is not None}}
        plan["provenance"]["ebtrain"] = {"method": self.config.eb_method, "block": self.config.eb_block,
                                         "ratio": self.ratio, "scope": self.scope, "profile": self.config.eb_profile,
                                         "params": self.params}
        return plan

    def summary(self) -> dict:
        results = {b: self.detector.result(b).to_dict() for b in self.blocks}
        return {"method": self.config.eb_method, "block": self.config.eb_block, "ratio": self.ratio,
                "scope": self.scope, "profile": self.config.eb_profile,
                "params": next(iter(results.values()))["params"], "draw_step": self.draw_step, "detectors": results}
