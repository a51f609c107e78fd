"""Typed, frozen configurations of a training run, built and validated once from the flags at the entry point.

    config = TrainConfig.from_args(args)      # EarlyBirdError naming the flag when the flags do not fit together

A run is `run` (where, how long, how optimised, what is logged and saved), `slimming` (the coefficients, their L1
penalty and their records), `pruning` (how many heads / neurons go, and with which scope: used by tickets and by
EB-Train), `ticket` (where a ticket's plan and weights come from) and `eb` (EB-Train's detector). Each field has the
name of its flag's dest (`--per-device-train-batch-size` -> `run.per_device_train_batch_size`), so the flags stay as
they are for users; the library below the entry points (loop, EB-Train, tickets) reads these objects, never the
argparse namespace. Each config checks its own fields; `TrainConfig` checks the rules across them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Mapping

from ..blocks import BLOCKS, MLP, MSA
from ..detectors import check_applicable, describe_scaling, detector_class, scaled_params
from ..errors import EarlyBirdError
from ..masks import DEFAULT_GQA_RULE, check_gqa_rule, check_ratio, check_round_to
from ..profiles import DEFAULT_PROFILE, get_profile
from .trackers import tracker_names

# A default run (neither --checkpoint-every nor --checkpoint-minutes) saves a resumable checkpoint every this many
# minutes of training: a crash loses at most this much work (plus up to --logging-steps steps, where it is decided).
DEFAULT_CHECKPOINT_MINUTES = 30.0
# How long a process waits in a collective (a barrier, an all-reduce) before the job is killed: torch's default is 10
# minutes under NCCL, less than the main process may spend preparing ImageNet's file index or SQuAD's features while
# the others wait for it (accelerate's main_process_first).
DEFAULT_DDP_TIMEOUT_MINUTES = 180.0
# The pruning ratio of the masks watched when none is configured (EB-Train's detector, the trackers' mask summaries).
DEFAULT_MASK_RATIO = 0.3


def _at_least(name: str, value, minimum=1) -> None:
    if value is not None and value < minimum:
        raise EarlyBirdError(f"--{name} must be >= {minimum}, got {value}")


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _ratio(dest: str, value) -> float:
    try:
        return check_ratio(value)
    except EarlyBirdError as err:
        raise EarlyBirdError(f"{_flag(dest)}: {err}") from None


def _from(cls, args, **computed):
    """An instance of the config dataclass `cls` from the namespace's attributes of the same names."""
    values = {f.name: getattr(args, f.name) for f in fields(cls) if f.name not in computed}
    return cls(**values, **computed)


@dataclass(frozen=True)
class RunConfig:
    output_dir: str
    overwrite_output_dir: bool = False
    resume: bool = False
    seed: int = 42
    cache_dir: str | None = None
    disable_tqdm: bool = False
    exit_code_on_preempt: int | None = None  # None: 128 + the signal's number (earlybird.training.preempt)
    # budget and optimisation
    max_steps: int | None = None
    num_train_epochs: float = 3.0
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.0
    lr_scheduler: str = "linear"
    max_grad_norm: float = 1.0
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 16
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    dataloader_num_workers: int | None = None  # None: chosen per data set (earlybird.data.common.default_num_workers)
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    # logging, evaluation, checkpoints
    logging_steps: int = 50
    report_to: str = "none"
    eval_every: int = 0
    checkpoint_every: int | None = None  # None: not given (see checkpoint_seconds)
    checkpoint_minutes: float | None = None
    keep_checkpoints: int = 2
    save_steps: tuple = ()
    save_every: int = 0
    debug_crash_at_step: int | None = None  # test-only: stop abruptly after this step, as a kill would
    ddp_timeout_minutes: float = DEFAULT_DDP_TIMEOUT_MINUTES

    def __post_init__(self):
        object.__setattr__(self, "save_steps", tuple(self.save_steps or ()))
        _at_least("max-steps", self.max_steps)
        if self.max_steps is None and not self.num_train_epochs > 0:
            raise EarlyBirdError(f"--num-train-epochs must be > 0, got {self.num_train_epochs}")
        for dest in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps",
                     "logging_steps", "keep_checkpoints", "max_train_samples", "max_eval_samples"):
            _at_least(dest.replace("_", "-"), getattr(self, dest))
        for dest in ("eval_every", "checkpoint_every", "save_every", "dataloader_num_workers"):
            _at_least(dest.replace("_", "-"), getattr(self, dest), 0)
        for dest in ("learning_rate", "weight_decay", "max_grad_norm", "checkpoint_minutes"):
            if getattr(self, dest) is not None and getattr(self, dest) < 0:
                raise EarlyBirdError(f"{_flag(dest)} must be >= 0, got {getattr(self, dest)}")
        if not self.ddp_timeout_minutes > 0:
            raise EarlyBirdError(f"--ddp-timeout-minutes must be > 0, got {self.ddp_timeout_minutes}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise EarlyBirdError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.exit_code_on_preempt is not None and not 0 <= self.exit_code_on_preempt <= 255:
            raise EarlyBirdError(f"--exit-code-on-preempt must be in 0..255, got {self.exit_code_on_preempt}")
        if self.resume and self.overwrite_output_dir:
            raise EarlyBirdError("--resume and --overwrite-output-dir contradict each other; pick one")
        tracker_names(self.report_to)  # refuses a tracker that is not installed

    def snapshot_due(self, step: int) -> bool:
        return step in self.save_steps or bool(self.save_every and step % self.save_every == 0)

    def checkpoint_due(self, step: int) -> bool:
        """A checkpoint by steps (--checkpoint-every) at this step."""
        return bool(self.checkpoint_every and step % self.checkpoint_every == 0)

    @property
    def checkpoint_seconds(self) -> float:
        """The period of checkpoints by wall time, 0 for none: --checkpoint-minutes, else DEFAULT_CHECKPOINT_MINUTES
        when --checkpoint-every is not given either (--checkpoint-every alone: by steps only; 0: no checkpoints)."""
        if self.checkpoint_minutes is not None:
            return 60.0 * self.checkpoint_minutes
        return 60.0 * DEFAULT_CHECKPOINT_MINUTES if self.checkpoint_every is None else 0.0

    @property
    def trackers(self) -> tuple:
        """accelerate's tracker names for --report-to (empty for none)."""
        return tracker_names(self.report_to)


@dataclass(frozen=True)
class SlimmingConfig:
    self_slimming: bool = False
    inter_slimming: bool = False
    l1_self: float = 0.0
    l1_inter: float = 0.0
    slim_before: bool = False
    soft_by_one: bool = False
    record_every: int = 1
    record_chunk: int = 256

    def __post_init__(self):
        for dest in ("record_every", "record_chunk"):
            _at_least(dest.replace("_", "-"), getattr(self, dest))
        for block in BLOCKS.values():
            strength = self.l1(block.name)
            if strength < 0:
                raise EarlyBirdError(f"--l1-{block.prefix} must be >= 0, got {strength}")
            if strength and not self.slims(block.name):
                raise EarlyBirdError(f"--l1-{block.prefix} needs --{block.prefix}-slimming (there are no "
                                     f"{block.unit} coefficients to penalise)")

    def slims(self, block: str) -> bool:
        return getattr(self, BLOCKS[block].slimming_flag)

    def l1(self, block: str) -> float:
        return getattr(self, f"l1_{BLOCKS[block].prefix}")

    @property
    def model_flags(self) -> dict:
        """The model-config switches of the patch (from_pretrained / config overrides)."""
        return {"self_slimming": self.self_slimming, "inter_slimming": self.inter_slimming,
                "slim_before": self.slim_before, "soft_by_one": self.soft_by_one}

    @property
    def any(self) -> bool:
        return self.self_slimming or self.inter_slimming


@dataclass(frozen=True)
class PruningConfig:
    """How much of each block a ticket or EB-Train prunes, and whether per layer or over all layers (`from_args`
    resolves a scope not given to the detection profile's default: EB-Train's --eb-profile, else the paper's)."""

    self_pruning_ratio: float = 0.0
    inter_pruning_ratio: float = 0.0
    self_pruning_scope: str = "layerwise"
    inter_pruning_scope: str = "layerwise"
    gqa_rule: str = DEFAULT_GQA_RULE  # how heads of grouped-query attention are chosen (earlybird.masks)
    round_to: int = 1  # kept width per layer rounded up to a multiple (earlybird.masks)

    def __post_init__(self):
        for block in BLOCKS.values():
            dest = f"{block.prefix}_pruning_ratio"
            object.__setattr__(self, dest, _ratio(dest, getattr(self, dest)))
        for dest, check in (("gqa_rule", check_gqa_rule), ("round_to", check_round_to)):
            try:
                check(getattr(self, dest))
            except EarlyBirdError as err:
                raise EarlyBirdError(f"{_flag(dest)}: {err}") from None

    @property
    def structure(self) -> dict:
        """compute_mask's keywords besides ratio and scope for a plan of a model with `group_size` query heads per
        KV head (1: no grouped-query attention)."""
        return {"gqa_rule": self.gqa_rule, "round_to": self.round_to}

    def ratio(self, block: str) -> float:
        return getattr(self, f"{BLOCKS[block].prefix}_pruning_ratio")

    def scope(self, block: str) -> str:
        return getattr(self, f"{BLOCKS[block].prefix}_pruning_scope")

    @property
    def ratios(self) -> dict:
        return {name: self.ratio(name) for name in BLOCKS}

    @property
    def scopes(self) -> dict:
        return {name: self.scope(name) for name in BLOCKS}


@dataclass(frozen=True)
class TicketConfig:
    """Where a ticket comes from: a plan file, or records at a step (optionally a random baseline of it)."""

    prune_plan: str | None = None
    records: str | None = None
    prune_step: int | None = None
    random_prune: int | None = None
    rewind: str = "init"
    init_checkpoint: str | None = None

    def __post_init__(self):
        if self.enabled:
            if self.prune_plan and self.records:
                raise EarlyBirdError("--prune-plan and --records are two ways to name the pruning; give one")
            if self.records and self.prune_step is None:
                raise EarlyBirdError("--records needs --prune-step (the recorded step whose masks are used)")
            if self.prune_plan and (self.prune_step is not None or self.random_prune is not None):
                raise EarlyBirdError("--prune-step and --random-prune go with --records; a --prune-plan is used as is")
        else:
            for dest in ("prune_step", "random_prune", "init_checkpoint"):
                if getattr(self, dest) is not None:
                    raise EarlyBirdError(f"{_flag(dest)} needs --records or --prune-plan")

    @property
    def enabled(self) -> bool:
        return bool(self.prune_plan or self.records)

    @property
    def where(self) -> str:
        """How the user named the plan, for messages."""
        return self.prune_plan or f"--records {self.records}"


@dataclass(frozen=True)
class EBConfig:
    """EB-Train's detector: which method watches which block(s), its masks' ratio and scope, its parameters."""

    eb_method: str | None = None
    eb_block: str = "msa"  # msa, mlp or both
    eb_ratio: float | None = None  # as given; `ratio` resolves the default
    eb_scope: str | None = None  # None: the profile's default for each block
    eb_scale: bool = False  # the study's step-counted parameters scaled to the run's length
    eb_profile: str = DEFAULT_PROFILE  # the detection profile (earlybird.profiles)
    params: Mapping = field(default_factory=dict)  # the detector parameters set by --eb-<name>

    def __post_init__(self):
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        get_profile(self.eb_profile)
        if self.eb_method is None:
            if self.eb_scale:
                raise EarlyBirdError("--eb-scale needs --eb-method")
            if self.eb_profile != DEFAULT_PROFILE:
                raise EarlyBirdError("--eb-profile needs --eb-method")
            if self.params or self.eb_ratio is not None:
                flag = f"--eb-{next(iter(self.params), 'ratio')}".replace("_", "-")
                raise EarlyBirdError(f"{flag} needs --eb-method")
            return
        detector_class(self.eb_method, self.eb_profile)
        if self.eb_ratio is not None:
            _ratio("eb_ratio", self.eb_ratio)
        check_applicable(self.eb_method, dict(self.params), flag=lambda name: _flag(f"eb_{name}"),
                         method_flag="--eb-method", profile=self.eb_profile)

    @property
    def enabled(self) -> bool:
        return self.eb_method is not None

    @property
    def blocks(self) -> tuple:
        return tuple(BLOCKS) if self.eb_block == "both" else (self.eb_block,)

    def detector_params(self, total_steps: int, block: str | None = None) -> tuple[dict, str | None]:
        """The detector's parameters for `block` in a run of `total_steps` steps: those given, over the study's scaled
        ones with --eb-scale (a profile's per-block defaults scale per block); and the line saying how they were
        scaled (None without --eb-scale)."""
        if not self.eb_scale:
            return dict(self.params), None
        scaled, factor = scaled_params(self.eb_method, total_steps, profile=self.eb_profile, block=block)
        kept = {name: value for name, value in scaled.items() if name not in self.params}
        return {**scaled, **self.params}, describe_scaling(self.eb_method, total_steps, kept, factor,
                                                           self.eb_profile, block)

    def ratio(self, pruning: PruningConfig) -> float:
        """The detector's mask ratio: --eb-ratio, else the watched block's pruning ratio, else DEFAULT_MASK_RATIO."""
        if self.eb_ratio is not None:
            return self.eb_ratio
        ratio = pruning.ratio(MLP.name if self.eb_block == MLP.name else MSA.name)
        return ratio if ratio > 0 else DEFAULT_MASK_RATIO


@dataclass(frozen=True)
class TrainConfig:
    run: RunConfig
    slimming: SlimmingConfig = field(default_factory=SlimmingConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    ticket: TicketConfig = field(default_factory=TicketConfig)
    eb: EBConfig = field(default_factory=EBConfig)

    def __post_init__(self):
        if self.ticket.enabled and self.eb.enabled:
            raise EarlyBirdError("--eb-method (EB-Train) cannot be combined with --prune-plan/--records")
        if self.eb.enabled:
            for name in self.eb.blocks:
                block = BLOCKS[name]
                if not self.slimming.slims(name):
                    raise EarlyBirdError(f"--eb-block {self.eb.eb_block} watches the {name} coefficients: "
                                         f"pass --{block.prefix}-slimming")
            for block in BLOCKS.values():
                if self.pruning.ratio(block.name) > 0 and not self.slimming.slims(block.name):
                    raise EarlyBirdError(f"--{block.prefix}-pruning-ratio > 0 in EB-Train needs "
                                         f"--{block.prefix}-slimming")
            if not any(self.pruning.ratio(name) for name in BLOCKS):
                raise EarlyBirdError("EB-Train prunes in place when it draws: give --self-pruning-ratio and/or "
                                     "--inter-pruning-ratio > 0")

    @classmethod
    def from_args(cls, args) -> "TrainConfig":
        """The configs of a run from the entry point's parsed flags (`earlybird.training.args.common_parser`)."""
        from ..detectors import given_params

        profile = get_profile(args.eb_profile)  # its default scopes fill the pruning scopes not given
        scopes = {f"{b.prefix}_pruning_scope": profile.scope(b.name, getattr(args, f"{b.prefix}_pruning_scope"))
                  for b in BLOCKS.values()}
        return cls(run=_from(RunConfig, args), slimming=_from(SlimmingConfig, args),
                   pruning=_from(PruningConfig, args, **scopes), ticket=_from(TicketConfig, args),
                   eb=_from(EBConfig, args, params=given_params(args, prefix="eb_")))

    def mask_settings(self, block: str) -> tuple[float, str]:
        """(ratio, scope) of the masks watched on a block: EB-Train's detector's for the blocks it watches, else the
        block's pruning ratio (DEFAULT_MASK_RATIO when 0) and scope."""
        if self.eb.enabled and block in self.eb.blocks:
            return self.eb.ratio(self.pruning), get_profile(self.eb.eb_profile).scope(block, self.eb.eb_scope)
        return self.pruning.ratio(block) or DEFAULT_MASK_RATIO, self.pruning.scope(block)

    @property
    def kind(self) -> str:
        """What kind of run this is (written into results.json; see earlybird.layout.RUN_KINDS)."""
        if self.eb.enabled:
            return "ebtrain"
        if self.ticket.enabled:
            return "random" if self.ticket.random_prune is not None else "ticket"
        if self.slimming.any:
            return "slim"
        return "dense"
