"""Early-bird tickets in any Hugging Face `Trainer`: one callback does the slimming penalty, the records and the draw.

    model = BertForSequenceClassification.from_pretrained(path, self_slimming=True, inter_slimming=True)
    trainer = Trainer(model=model, args=args, train_dataset=train, processing_class=tokenizer,
                      callbacks=[EarlyBirdCallback(l1_self=1e-4, l1_inter=1e-4, method="slope", ratio=0.3)])

The keyword arguments are the training flags of the entry points without the dashes and the `eb-` prefix (`--l1-self`
-> `l1_self`, `--eb-method` -> `method`, `--eb-window` -> `window`, `--self-pruning-ratio` -> `self_pruning_ratio`),
validated by the same configs (`earlybird.training.config`) and the detectors' own declarations, so the values and
the messages are those of the flags. What happens in the Trainer's loop, step by step:

* `on_train_begin`: the model, the optimizer and the run length are checked (EarlyBirdError, one line); the records
  are opened under `<output_dir>/records` (main process only); the detector is built (`scale=True` scales the study's
  step-counted parameters to `state.max_steps`, and says so).
* `on_pre_optimizer_step` (after the Trainer has unscaled and clipped the gradients): the L1 subgradient
  `l1 * sign(c)` is added to each coefficient's gradient, once per optimizer step whatever the gradient accumulation,
  in fp32; it is not clipped and not in the logged `grad_norm`. For this one step the coefficients sit in the
  optimizer's no-decay group, so they are never weight-decayed; `on_optimizer_step` puts the groups back as the
  Trainer made them, so its checkpoints (and `resume_from_checkpoint`) keep its own layout.
* `on_step_end`: the coefficients after the step are copied into the recorder's buffer on their device and into the
  detector's buffer; the detector is fed at its checks only (`earlybird.training.ebtrain.EBTrain`, the same object
  EB-Train uses), so nothing is read back to the host between checks and record flushes. At the draw: a log line is
  forced (`early_bird_step` in `state.log_history`), `<output_dir>/plan.json` is written, and optionally the pruned,
  folded ticket is saved to `<output_dir>/ticket/` and training stops.
* `on_log`: `l1_penalty`, the mean L1 term over the steps the logged `loss` (the task loss, untouched) covers.

See README.md ("With the Hugging Face Trainer") and docs/training.md for the semantics in full.
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import torch
from transformers import TrainerCallback

from .blocks import BLOCKS
from .detectors import OnlineEarlyBird, all_params
from .errors import EarlyBirdError
from .fileio import write_json_atomic
from .layout import TICKET, RunLayout
from .masks import DEFAULT_GQA_RULE, check_scope, head_group_size
from .plans import load_plan, save_plan
from .profiles import DEFAULT_PROFILE, get_profile
from .records import CoefficientRecorder, load_records
from .slimming import (apply_plan, fold_slimming, head_coefficients, model_shape, neuron_coefficients,
                       stack_coefficients)
from .training.config import EBConfig, PruningConfig, RunConfig, SlimmingConfig, TrainConfig
from .training.ebtrain import EBTrain

BLOCK_CHOICES = (*BLOCKS, "both")


def _keywords(message) -> str:
    """A config's message in the callback's words: the flag `--eb-window` is the keyword `window`, `--l1-self` is
    `l1_self` (the keywords are the flags without the dashes and the `eb-` prefix)."""
    return re.sub(r"--(?:eb-)?([a-z][a-z0-9-]*)", lambda m: m.group(1).replace("-", "_"), str(message))


def _refuse(message) -> EarlyBirdError:
    return EarlyBirdError(f"EarlyBirdCallback: {_keywords(message)}")


def _named(keyword: str, check, value):
    try:
        return check(value)
    except EarlyBirdError as err:
        raise EarlyBirdError(f"{keyword}: {err}") from None


def detection_config(method=None, block="msa", ratio=None, scope=None, scale=False, profile=DEFAULT_PROFILE,
                     **params) -> EBConfig:
    """The detector settings of the callback, validated: every detector keyword goes through here.

    `params` are the detectors' parameters by their declared names (`window`, `cached`, ...): a name no detector
    declares, or one that `method` does not take, is refused; the values are checked by building the detector.
    """
    declared = all_params()
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise _refuse(f"unexpected keyword argument {unknown[0]!r}; the detector parameters are {', '.join(declared)}")
    if block not in BLOCK_CHOICES:
        raise _refuse(f"block must be one of {', '.join(BLOCK_CHOICES)}; got {block!r}")
    try:
        eb = EBConfig(eb_method=method, eb_block=block, eb_ratio=ratio, eb_scope=scope, eb_scale=bool(scale),
                      eb_profile=profile, params=params)
        if eb.enabled:  # the values, from the declarations (and the scope), before any training
            OnlineEarlyBird(block=eb.blocks, ratio=eb.ratio(PruningConfig()), scope=scope, method=method,
                            profile=profile, **params)
    except EarlyBirdError as err:
        raise _refuse(err) from None
    return eb


class EarlyBirdCallback(TrainerCallback):
    """Network slimming, coefficient records and early-bird detection in a Hugging Face `Trainer`.

    Args (keyword only; the flags' names without the dashes and the `eb-` prefix):
        l1_self, l1_inter: L1 strengths on the head / neuron coefficients (`--l1-self`, `--l1-inter`; default 0).
        record_every, record_chunk: record every k-th step; rows buffered on the device per write (1, 256).
        method: the detector (`hamming`, `slope`, `mk`, `adf`; None: slimming and records only).
        block, ratio, scope: the masks it watches (`msa` | `mlp` | `both`; mask ratio, default the block's pruning
            ratio else 0.3; `layerwise` | `global` | `uniform`, default the profile's for each block).
        profile: the detection profile (`paper`, the default, or `original`: `--eb-profile`, earlybird.profiles).
        scale: scale the study's step-counted detector parameters to the run's `max_steps` (`--eb-scale`).
        **params: the detector's own parameters (`cached`, `threshold`, `smooth`, `window`, `alpha`, `every`,
            `patience`, ...: see `earlybird detect --help`); a parameter the method does not take is refused.
        self_pruning_ratio, inter_pruning_ratio: what the plan at the draw prunes (default: the detector's ratio for
            each slimmed block); self_pruning_scope, inter_pruning_scope: `layerwise` | `global` | `uniform` (default:
            the profile's).
        gqa_rule: how the heads of a grouped-query attention (Llama, Qwen3) are chosen, for the detector's masks and
            the plan: `per-group` (default) or `groups` (`--gqa-rule`, earlybird.masks).
        round_to: the plan keeps a multiple of this many units per layer, rounded up (`--round-to`; default 1).
        stop_at_draw: stop training at the draw.
        save_ticket: save the drawn ticket, pruned and folded, to `<output_dir>/ticket/` (with the Trainer's
            tokenizer or processor).
    """

    def __init__(self, *, l1_self: float = 0.0, l1_inter: float = 0.0, record_every: int = 1, record_chunk: int = 256,
                 method: str | None = None, block: str = "msa", ratio: float | None = None, scope: str | None = None,
                 scale: bool = False, profile: str = DEFAULT_PROFILE, self_pruning_ratio: float | None = None,
                 inter_pruning_ratio: float | None = None, self_pruning_scope: str | None = None,
                 inter_pruning_scope: str | None = None, gqa_rule: str = DEFAULT_GQA_RULE, round_to: int = 1,
                 stop_at_draw: bool = False, save_ticket: bool = False, **params):
        self.eb = detection_config(method, block, ratio, scope, scale, profile, **params)
        default_scope = get_profile(self.eb.eb_profile).scope  # the profile's scopes fill those not given
        self_pruning_scope = default_scope("msa", self_pruning_scope)
        inter_pruning_scope = default_scope("mlp", inter_pruning_scope)
        self.given_ratios = {"msa": self_pruning_ratio, "mlp": inter_pruning_ratio}
        try:
            # The values alone here (as if both blocks were slimmed); against the model at on_train_begin.
            self.slimming = SlimmingConfig(self_slimming=True, inter_slimming=True, l1_self=l1_self, l1_inter=l1_inter,
                                           record_every=record_every, record_chunk=record_chunk)
            self.pruning = PruningConfig(self_pruning_ratio=self_pruning_ratio or 0.0,
                                         inter_pruning_ratio=inter_pruning_ratio or 0.0,
                                         self_pruning_scope=self_pruning_scope, inter_pruning_scope=inter_pruning_scope,
                                         gqa_rule=gqa_rule, round_to=round_to)
            for name, block in BLOCKS.items():
                _named(f"{block.prefix}_pruning_scope", check_scope, self.pruning.scope(name))
        except EarlyBirdError as err:
            raise _refuse(err) from None
        if not self.eb.enabled:
            given = [name for name, value in (("self_pruning_ratio", self_pruning_ratio),
                                              ("inter_pruning_ratio", inter_pruning_ratio),
                                              ("stop_at_draw", stop_at_draw), ("save_ticket", save_ticket)) if value]
            if given:
                raise _refuse(f"{given[0]} needs method (the plan and the ticket are made at the detector's draw)")
        self.stop_at_draw = bool(stop_at_draw)
        self.save_ticket = bool(save_ticket)
        self.ebtrain: EBTrain | None = None
        self.recorder: CoefficientRecorder | None = None
        self.draw_step: int | None = None
        self.plan: dict | None = None

    # -- on_train_begin: check everything against the model, the optimizer and the run ------------------------------

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
        _refuse_sharded_training()
        self.model = model
        self.output = RunLayout(args.output_dir)
        self.is_main = state.is_world_process_zero
        coefficients = {"msa": head_coefficients(model), "mlp": neuron_coefficients(model)}
        self._coefficients = coefficients  # (found once: walking the modules every step costs ~1 ms of Python)
        if not any(coefficients.values()):
            raise _refuse(f"{type(model).__name__} has no slimming coefficients: load it with "
                          "from_pretrained(..., self_slimming=True, inter_slimming=True)")
        config = self._train_config(args, {name: bool(c) for name, c in coefficients.items()}, type(model).__name__)
        self.slimming = config.slimming
        self._penalised = []  # (strength, trainable coefficients) of each penalised block
        for name, block in BLOCKS.items():
            strength = config.slimming.l1(name)
            params = [c for c in coefficients[name] if c.requires_grad]
            if strength and not params:
                raise _refuse(f"l1_{block.prefix}={strength} but the model's {block.unit} coefficients are frozen "
                              "(requires_grad=False)")
            if strength:
                self._penalised.append((strength, params))
        device = next(c for cs in coefficients.values() for c in cs).device
        self._penalty = torch.zeros((), dtype=torch.float32, device=device)  # summed on the device, read at logs
        self._penalty_steps = 0
        self._decay = NoDecayDuringStep(optimizer, [c for cs in coefficients.values() for c in cs])
        self._pending_log: dict = {}
        self._checked_unscaled = False
        resumed = state.global_step > 0
        self._max_steps = int(state.max_steps)
        self.recorder = self._open_records(model, resumed)
        if config.eb.enabled:
            self.ebtrain = EBTrain(config.eb, config.pruning, state.max_steps, config.slimming.record_every,
                                   args.world_size, group_size=head_group_size(model_shape(model)))
            problem = self.ebtrain.never_tests()
            if problem:
                hint = self.ebtrain.budget_hint("max_steps={} or more", "scale=True")
                raise _refuse(f"method {config.eb.eb_method}: {problem} (the keyword arguments of those "
                              "parameters" + (f", or {hint})" if hint else ")"))
            if self.ebtrain.scaling:
                self._say(f"scale=True: {self.ebtrain.scaling}")
            if resumed:
                self._resume_detector(state.global_step)

    def _train_config(self, args, slims: dict, model_name: str) -> TrainConfig:
        """The run's configs, checked together as the entry points check their flags: the L1 strengths and the
        watched block against the model's coefficients; the plan's ratios (default: the detector's) per block."""
        flags = {BLOCKS[name].slimming_flag: on for name, on in slims.items()}
        given = self.pruning
        ratio = self.eb.ratio(given) if self.eb.enabled else 0.0
        ratios = {name: (self.given_ratios[name] if self.given_ratios[name] is not None else ratio if slims[name]
                         else 0.0) for name in BLOCKS}
        try:
            return TrainConfig(
                run=RunConfig(output_dir=args.output_dir),
                slimming=SlimmingConfig(**flags, l1_self=self.slimming.l1_self, l1_inter=self.slimming.l1_inter,
                                        record_every=self.slimming.record_every,
                                        record_chunk=self.slimming.record_chunk),
                pruning=PruningConfig(self_pruning_ratio=ratios["msa"], inter_pruning_ratio=ratios["mlp"],
                                      self_pruning_scope=given.self_pruning_scope,
                                      inter_pruning_scope=given.inter_pruning_scope, gqa_rule=given.gqa_rule,
                                      round_to=given.round_to),
                eb=self.eb)
        except EarlyBirdError as err:
            state = ", ".join(f"{flag}={on}" for flag, on in flags.items())
            raise _refuse(f"{err} (the model, {model_name}, was loaded with {state})") from None

    def _open_records(self, model, resumed: bool) -> CoefficientRecorder:
        meta = {"model_type": model.config.model_type, "model": model_shape(model), "trainer": "transformers.Trainer",
                "max_steps": self._max_steps,  # the run's budget: what scale=True scaled to (the report reads it)
                "flags": {k: bool(getattr(model.config, k, False)) for k in SlimmingConfig().model_flags},
                "model_name_or_path": getattr(model.config, "_name_or_path", None) or None}
        try:
            return CoefficientRecorder(self.output.records, every=self.slimming.record_every,
                                       chunk=self.slimming.record_chunk, is_main_process=self.is_main, meta=meta,
                                       resume=resumed)
        except EarlyBirdError as err:
            raise _refuse(f"{err} (resume_from_checkpoint continues a run; a new run needs a new output_dir)") from None

    def _resume_detector(self, step: int) -> None:
        """After a checkpoint: a draw already planned is kept as drawn, else the records up to it are replayed
        (the detector is deterministic), as EB-Train does on --resume."""
        plan = self.output.plan
        if plan.is_file():
            drawn = load_plan(plan)["provenance"]["step"]
            if drawn <= step:
                self.ebtrain.draw_step = self.draw_step = int(drawn)
                return
        try:
            self.ebtrain.replay(load_records(self.output.records), step)
        except EarlyBirdError as err:
            raise _refuse(err) from None

    # -- every optimizer step -----------------------------------------------------------------------------------------

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        if not self._checked_unscaled:
            _check_unscaled(optimizer)
            self._checked_unscaled = True
        if self._penalised:
            self._add_l1_subgradient()
        self._decay.exclude()

    @torch.no_grad()
    def _add_l1_subgradient(self) -> None:
        """grad += l1 * sign(c) in fp32 (the subgradient of l1 * |c|, 0 at 0 as autograd's), and the penalty
        l1 * sum |c| of the coefficients this step's forward passes used, summed on the device for the log."""
        for strength, params in self._penalised:
            for p in params:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            values = [p.detach().float() for p in params]
            grads = [p.grad for p in params]
            subgradient = torch._foreach_mul(torch._foreach_sign(values), strength)
            if grads[0].dtype == torch.float32:
                torch._foreach_add_(grads, subgradient)
            else:
                for grad, term in zip(grads, subgradient):
                    grad.copy_(grad.float() + term)
            self._penalty += strength * torch.stack(torch._foreach_norm(values, 1)).sum()
        self._penalty_steps += 1

    def on_optimizer_step(self, args, state, control, **kwargs):
        self._decay.restore()

    def on_step_end(self, args, state, control, processing_class=None, **kwargs):
        step = state.global_step
        if step % self.slimming.record_every == 0:
            msa, mlp = stack_coefficients(self._coefficients["msa"], self._coefficients["mlp"])
            if self.recorder.active and step > self.recorder.last_step:  # (a resumed run's earlier rows are kept)
                self.recorder.record(step, msa, mlp)
            if self.ebtrain is not None and not self.ebtrain.drawn and self.ebtrain.observe(step, msa, mlp):
                self._draw(control, processing_class)
        if control.should_save:  # the records cover the checkpoint about to be written
            self.recorder.flush()

    def on_save(self, args, state, control, **kwargs):
        self.recorder.flush()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None or "loss" not in logs:  # evaluation and the final summary: nothing of ours
            return
        added = dict(self._pending_log)
        self._pending_log = {}
        if self._penalised and self._penalty_steps:
            added["l1_penalty"] = (self._penalty / self._penalty_steps).item()  # one read per log line
            self._penalty.zero_()
            self._penalty_steps = 0
        logs.update(added)
        # The Trainer appended its copy of `logs` to the history just before this event.
        if state.log_history and state.log_history[-1].get("loss") == logs["loss"]:
            state.log_history[-1].update(added)

    def on_train_end(self, args, state, control, **kwargs):
        if self.recorder is not None:
            self.recorder.close()
        if self.ebtrain is not None and not self.ebtrain.drawn:
            self._say(f"no early bird drawn in {state.global_step} steps ({self.eb.eb_method})")
        if self.ebtrain is not None and self.is_main:
            write_json_atomic(self.account(state), self.output.ebtrain)

    def account(self, state) -> dict:
        """The run's own account, written to `<output_dir>/ebtrain.json` at the end of training (what `earlybird
        report` reads): the detector's summary, the run's budget (`max_steps`, what scale=True scaled to) and the
        steps it ran, and the Trainer's FLOPs (`state.total_flos`, stored before on_train_end). The callback never
        prunes the live model, so the FLOPs per step are the same before and after the draw."""
        steps_run = int(state.global_step)
        total = float(state.total_flos or 0.0)
        per_step = total / steps_run if steps_run else None
        return {**self.summary(), "trainer": "transformers.Trainer", "total_steps": self._max_steps,
                "steps_run": steps_run, "stopped_at_draw": bool(self.draw_step is not None and self.stop_at_draw),
                "flops": {"total": total, "before_draw": None if self.draw_step is None or per_step is None else
                          per_step * self.draw_step},
                "flops_note": "the Trainer's total_flos (its estimate: 6 x parameters x tokens, embeddings included)"}

    # -- the draw -----------------------------------------------------------------------------------------------------

    def _draw(self, control, processing_class) -> None:
        step = self.draw_step = self.ebtrain.draw_step
        shape = model_shape(self.model)
        self.plan = self.ebtrain.plan(shape, meta={"model": shape})
        pruned = {block.plan_key: sum(len(v) for v in self.plan[block.plan_key].values()) for block in BLOCKS.values()}
        self._pending_log = {"early_bird_step": step, "early_bird_pruned_heads": pruned["pruned_heads"],
                             "early_bird_pruned_neurons": pruned["pruned_intermediate"]}
        control.should_log = True  # the draw goes through the Trainer's log at this very step
        if self.is_main:
            self.recorder.flush()  # the records reach the draw: `earlybird detect` on them finds it
            self.plan["provenance"]["records"] = str(self.output.records.resolve())
            save_plan(self.plan, self.output.plan)
            where = self.output.plan
            if self.save_ticket:
                where = self._save_ticket(self.output.path / TICKET, processing_class)
            self._say(f"early bird drawn at step {step} ({self.eb.eb_method} on {self.eb.eb_block}); "
                      f"plan: {pruned['pruned_heads']} heads, {pruned['pruned_intermediate']} neurons -> {where}")
        if self.stop_at_draw:
            control.should_training_stop = True

    def _save_ticket(self, path: Path, processing_class=None) -> Path:
        """The model at the draw, pruned as the plan says and folded, saved with save_pretrained (a copy: the live
        model trains on), atomically: written to a temporary directory, then renamed."""
        ticket = copy.deepcopy(self.model)
        apply_plan(ticket, self.plan)
        fold_slimming(ticket)
        tmp = path.with_name(f".tmp-{path.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            ticket.save_pretrained(tmp)
            if processing_class is not None and hasattr(processing_class, "save_pretrained"):
                processing_class.save_pretrained(tmp)
        except Exception:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
        return path

    def summary(self) -> dict | None:
        """The detector's account (method, parameters, draw step, per-block trace), as in EB-Train's ebtrain.json."""
        return None if self.ebtrain is None else self.ebtrain.summary()

    def _say(self, text: str) -> None:
        if self.is_main:
            print(f"EarlyBirdCallback: {text}", flush=True)


class NoDecayDuringStep:
    """Keeps the slimming coefficients out of weight decay, whatever `TrainingArguments.weight_decay` says.

    The Trainer puts every parameter whose name has no `bias` / `norm` into its decayed group, the coefficients
    included. Decay would pull them towards 0 on top of the L1 penalty (and shrink them even with l1 = 0). For the
    optimizer step only, the coefficients are moved into a group without decay whose other settings (lr, betas, ...)
    are those of their own group -- the Trainer's no-decay group -- and moved back after it: the optimizer's state is
    per parameter, so nothing else changes, and checkpoints keep the Trainer's group layout, which
    `resume_from_checkpoint` loads into a fresh optimizer before any callback runs. Moving them once for good would
    make that load fail (the group sizes would differ). The move is two list assignments per group per step.
    """

    def __init__(self, optimizer, coefficients: list):
        self.moves = []  # (from group, to group, their lists during the step, their own lists)
        if optimizer is None:
            return
        ids = {id(c) for c in coefficients}
        groups = optimizer.param_groups
        for group in groups:
            inside = [p for p in group["params"] if id(p) in ids]
            if not inside or not group.get("weight_decay", 0.0):
                continue
            same = {k: v for k, v in group.items() if k not in ("params", "weight_decay")}
            target = next((g for g in groups if not g.get("weight_decay", 0.0) and
                           {k: v for k, v in g.items() if k not in ("params", "weight_decay")} == same), None)
            if target is None:
                raise _refuse(f"the optimizer decays the slimming coefficients (a group with weight_decay="
                              f"{group['weight_decay']}) and has no group without weight decay and the same other "
                              "settings to move them to; give them a group with weight_decay=0")
            during = ([p for p in group["params"] if id(p) not in ids], target["params"] + inside)
            self.moves.append((group, target, during, (group["params"], target["params"])))

    def exclude(self) -> None:
        for group, target, (source_params, target_params), _ in self.moves:
            group["params"], target["params"] = source_params, target_params

    def restore(self) -> None:
        for group, target, _, (source_params, target_params) in self.moves:
            group["params"], target["params"] = source_params, target_params


def _refuse_sharded_training() -> None:
    """DeepSpeed and FSDP shard or flatten the parameters: the coefficients are not whole tensors there."""
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    kind = PartialState().distributed_type
    if kind in (DistributedType.DEEPSPEED, DistributedType.FSDP):
        raise _refuse(f"{kind.value} shards the parameters, the slimming coefficients included; the callback "
                      "supports single-device and DDP (multi-GPU, multi-node) training")


def _check_unscaled(optimizer) -> None:
    """Under fp16 with a GradScaler the L1 subgradient must meet unscaled gradients. The Trainer (5.23) unscales them
    before on_pre_optimizer_step -- in its clipping, or in the norm it computes when max_grad_norm is 0 -- and
    scaler.step then does not unscale twice; this checks that order once, on the first step."""
    scaler = getattr(optimizer, "scaler", None)
    if scaler is None or not scaler.is_enabled():
        return
    from torch.amp.grad_scaler import OptState

    inner = getattr(optimizer, "optimizer", optimizer)
    stage = scaler._per_optimizer_states[id(inner)]["stage"]
    if stage is not OptState.UNSCALED:
        raise _refuse("the gradients are still scaled by the fp16 GradScaler at on_pre_optimizer_step; the L1 "
                      "subgradient would be unscaled with them (this Trainer does not unscale before that event)")
