"""EB-Train: run an early-bird detector while training with slimming, and prune in place when it draws.

Feeding the detector. The coefficients of each recorded step stay on the device in a small buffer; the
buffer goes to the detector (one host transfer) at the steps where the detector *checks* (its clock,
`Detector.checks_at`: the `every` clock, or under the original profile the records at which a window is
decided, see earlybird.detectors), because a detector can only draw at a check. `observe(..., defer=True)`
(the training loop) only starts that transfer -- into pinned host memory, without waiting for it -- and
`decide()` finishes it later, once the device has more work queued (the loop decides after the next step's
forward and backward): the device queue never drains for the detector. `observe()` alone decides at once
(one sync per check; the Trainer callback). Either way the draw is the check's own step.

The plan at the draw comes from the coefficients of the draw step with earlybird's mask function
(`make_plan`, the profile's mask rule), the same plan `earlybird plan --profile P` would write from the
records at that step.

Under several processes every process runs the same detector on the same (all-reduced) coefficients,
and the main process's decision is broadcast as one integer in host memory (gloo: the default group on the
CPU, a gloo group beside NCCL), so no device is synchronised for it; at the draw, its coefficients follow,
so all prune at the same step with the same plan.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from ..blocks import BLOCKS
from ..detectors import OnlineEarlyBird, first_test_if_longer, never_tests_message
from ..errors import EarlyBirdError
from ..plans import plan_from_coefficients
from ..records import derived_meta
from .config import EBConfig, PruningConfig


def _pinned_copy(tensor: torch.Tensor) -> torch.Tensor:
    """A host copy of a device tensor, filled asynchronously (page-locked memory, non-blocking)."""
    host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
    host.copy_(tensor, non_blocking=True)
    return host


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
        self._in_flight: tuple | None = None  # (steps, buffer, host copies, event) of a check not yet decided
        self._decision_group = None  # the group the decision is broadcast in (host memory)
        self._last_observed: int | None = None
        self._observed = 0  # records observed: the index of the next one (the original profile's clock)
        self.draw_step: int | None = None
        self.draw_coefficients: dict | None = None
        self._restored: dict | None = None  # the detectors' results a checkpoint after the draw carried (restore)

    def _observed_steps(self) -> range:
        return range(self.record_every, self.total_steps + 1, self.record_every)

    def never_tests(self) -> str | None:
        """Why the detector could never test in this run (e.g. a window longer than it), or None: one line, naming
        no flag (EB-Train's and the Trainer callback's wordings add their own: see `budget_hint`)."""
        total = self.total_steps
        for detector in self.detector.detectors.values():
            message = never_tests_message(detector, self._observed_steps(), f"this run's {total} steps "
                                                                            f"(recorded every {self.record_every})")
            if message:
                return message
        return None

    def budget_hint(self, steps_flag: str, scale_flag: str) -> str:
        """What would make a detector that never tests testable, in the caller's flag names: the run length at which
        every block's detector tests (`steps_flag`, a template of that number), and scaling the study's parameters (`scale_flag`)
        when that is not on already and would make it test on this run."""
        needed = [first_test_if_longer(d, self._observed_steps()) for d in self.detector.detectors.values()]
        hints = [] if None in needed else [steps_flag.format(max(needed))]
        if not self.config.eb_scale:
            scaled = EBTrain(replace(self.config, eb_scale=True), self.pruning, self.total_steps, self.record_every)
            if scaled.never_tests() is None:
                hints.append(f"{scale_flag} to scale the study's parameters to this run")
        return ", or ".join(hints)

    def check_budget(self) -> None:
        """Refuse, before training, a detector that could never test in this run."""
        message = self.never_tests()
        if message:
            hint = self.budget_hint("--max-steps {} or more", "--eb-scale")
            raise EarlyBirdError(f"--eb-method {self.config.eb_method}: {message} (the --eb- flags of those "
                                 f"parameters" + (f", or {hint})" if hint else ")"))

    @property
    def params(self) -> dict:
        """The detector's parameters (every block's detector has the same), scaled ones included."""
        return next(iter(self.detector.detectors.values())).params()

    @property
    def drawn(self) -> bool:
        return self.draw_step is not None

    @property
    def pending(self) -> bool:
        """A check whose coefficients are on their way to the host: `decide()` says whether it drew."""
        return self._in_flight is not None

    def observe(self, step: int, msa, mlp, defer: bool = False) -> bool:
        """Buffer one step's coefficients (device tensors); True at the step the early bird is drawn.

        defer=True: at a check, start the host transfer and return False; `decide()` gives the check's answer."""
        if self.drawn:
            return False
        if self._in_flight is not None:
            raise RuntimeError("EBTrain.observe: decide() the previous check first")
        self._steps.append(int(step))
        self._buffer["msa"].append(msa)
        self._buffer["mlp"].append(mlp)
        check = self.detector.checks_at(step, self._last_observed, self._observed)
        self._last_observed = int(step)
        self._observed += 1
        # A cap keeps the buffer bounded whatever `every` is; feeding early changes nothing but timing.
        if check or len(self._steps) >= 1024:
            if defer:
                self._send_to_host()
                return False
            return self._feed()
        return False

    def _take_buffer(self) -> tuple[list, dict]:
        steps, buffer = self._steps, self._buffer
        self._steps, self._buffer = [], {b: [] for b in BLOCKS}
        return steps, buffer

    def _feed(self) -> bool:
        steps, buffer = self._take_buffer()
        return self._decide(steps, buffer, {b: torch.stack(buffer[b]).float().cpu().numpy() for b in self.blocks})

    def _send_to_host(self) -> None:
        """Start copying the buffered rows to pinned host memory; the device does it in its own time."""
        steps, buffer = self._take_buffer()
        stacks = {b: torch.stack(buffer[b]).float() for b in self.blocks}
        event, device = None, next(iter(stacks.values())).device
        if device.type == "cuda":
            stacks = {b: _pinned_copy(t) for b, t in stacks.items()}
            event = torch.cuda.Event()
            event.record()
        elif device.type != "cpu":  # another accelerator: copied now
            stacks = {b: t.cpu() for b, t in stacks.items()}
        self._in_flight = (steps, buffer, stacks, event)

    def decide(self) -> bool:
        """The answer of the check `observe(..., defer=True)` started: True if the early bird was drawn at it.

        Waits for that transfer only (work queued after it keeps the device busy)."""
        steps, buffer, stacks, event = self._in_flight
        self._in_flight = None
        if event is not None:
            event.synchronize()
        return self._decide(steps, buffer, {b: t.numpy() for b, t in stacks.items()})

    def _decide(self, steps: list, buffer: dict, stacks: dict) -> bool:
        drew = self.detector.observe_many(steps, **stacks)
        if drew:  # (once per run: the plan's coefficients, read back from the device)
            row = steps.index(self.detector.draw_step)
            self.draw_coefficients = {b: None if buffer[b][row] is None else buffer[b][row].float().cpu().numpy()
                                      for b in BLOCKS}
        return self._agree(drew)

    def _agree(self, drew: bool) -> bool:
        """Every process takes the main process's decision (and, at the draw, its coefficients), so all prune
        together. The decision travels as one integer in host memory: no device is synchronised at a check."""
        if self.num_processes > 1:
            import torch.distributed as dist

            decision = torch.tensor([self.detector.draw_step if drew else -1], dtype=torch.int64)
            dist.broadcast(decision, src=0, group=self._host_group())
            drew = int(decision[0]) >= 0
            if drew:
                from accelerate.utils import broadcast_object_list

                message = [int(decision[0]), self.draw_coefficients]
                broadcast_object_list(message, from_process=0)
                self.detector.draw_step, self.draw_coefficients = message
        if drew:
            self.draw_step = int(self.detector.draw_step)
        return drew

    def _host_group(self):
        """The group that broadcasts CPU tensors: the default one when it has gloo, else a gloo group made once (all
        processes make it together, at their first check)."""
        if self._decision_group is None:
            import torch.distributed as dist

            gloo = "gloo" in str(dist.get_backend()).lower()
            self._decision_group = dist.group.WORLD if gloo else dist.new_group(backend="gloo")
        return self._decision_group

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

    def results(self) -> dict:
        """{block: the detector's result (draw step, checks, trace) as JSON}: what a checkpoint after the draw carries,
        since a resumed run's detector has not seen the records before it (`restore`)."""
        if self._restored is not None:
            return self._restored
        return {b: self.detector.result(b).to_dict() for b in self.blocks}

    def restore(self, draw: dict) -> None:
        """On resume from a checkpoint taken after the draw: the draw step and the detectors' results it saved."""
        self.draw_step = int(draw["step"])
        self._restored = draw.get("detectors")  # None in checkpoints of older versions: the summary lacks the trace

    def summary(self) -> dict:
        results = self.results()
        return {"method": self.config.eb_method, "block": self.config.eb_block, "ratio": self.ratio,
                "scope": self.scope, "profile": self.config.eb_profile,
                "params": next(iter(results.values()))["params"], "draw_step": self.draw_step, "detectors": results}
