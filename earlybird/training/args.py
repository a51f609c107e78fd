"""The flags every entry point shares, declared once: `common_parser()` is an argparse *parent*.

Entry points build `EntryParser(prog=..., parents=[common_parser()])`, add their own model/data
flags, and call `check_args(args)` before touching data or models, so bad input fails in one line
(`<prog>: error: ...`, exit code 2) before anything starts.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import EarlyBirdError
from ..masks import SCOPES, check_ratio

EB_METHODS = ("hamming", "slope", "mk", "adf")
# Detector parameters: flag dest -> (detector keyword, methods that take it).
EB_PARAMS = {
    "eb_cached": ("cached", ("hamming",)),
    "eb_threshold": ("threshold", ("hamming",)),
    "eb_smooth": ("smooth", ("slope", "mk", "adf")),
    "eb_window": ("window", ("slope", "mk", "adf")),
    "eb_alpha": ("alpha", ("slope", "mk", "adf")),
    "eb_every": ("every", EB_METHODS),
    "eb_patience": ("patience", EB_METHODS),
}


class EntryParser(argparse.ArgumentParser):
    """argparse with one-line errors: `<prog>: error: <message>` and exit code 2, no usage dump."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of integers, got {text!r}") from None
    if any(v < 0 for v in values):
        raise argparse.ArgumentTypeError(f"steps must be >= 0, got {text!r}")
    return values


def common_parser() -> argparse.ArgumentParser:
    """The shared flags (an argparse parent parser: `parents=[common_parser()]`)."""
    p = argparse.ArgumentParser(add_help=False)

    g = p.add_argument_group("run")
    g.add_argument("--output-dir", required=True, help="run directory (see docs/training.md for its layout)")
    g.add_argument("--overwrite-output-dir", action="store_true",
                   help="remove a previous run's files from --output-dir first")
    g.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --output-dir")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--cache-dir", default=None, help="datasets / hub cache directory")
    g.add_argument("--disable-tqdm", action="store_true", help="no progress bar")

    g = p.add_argument_group("budget and optimisation")
    g.add_argument("--max-steps", type=int, default=None,
                   help="optimizer steps in total (overrides --num-train-epochs)")
    g.add_argument("--num-train-epochs", type=float, default=3.0)
    g.add_argument("--learning-rate", type=float, default=5e-5)
    g.add_argument("--weight-decay", type=float, default=0.0,
                   help="AdamW weight decay (never applied to biases, LayerNorms or slimming coefficients)")
    g.add_argument("--warmup-ratio", type=float, default=0.0, help="fraction of the steps spent warming up")
    g.add_argument("--lr-scheduler", choices=("linear", "cosine", "constant"), default="linear",
                   help="decay after the warm-up")
    g.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping (0: none)")
    g.add_argument("--per-device-train-batch-size", type=int, default=8)
    g.add_argument("--per-device-eval-batch-size", type=int, default=16)
    g.add_argument("--gradient-accumulation-steps", type=int, default=1,
                   help="global batch = per-device batch x processes x this")
    g.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default="no")
    g.add_argument("--dataloader-num-workers", type=int, default=None,
                   help="DataLoader worker processes (default: for images decoded from files, the CPUs of this "
                        "process but one, 1 to 16; 0 for data held in memory)")
    g.add_argument("--max-train-samples", type=int, default=None)
    g.add_argument("--max-eval-samples", type=int, default=None)

    g = p.add_argument_group("logging, evaluation, checkpoints")
    g.add_argument("--logging-steps", type=int, default=50, help="log the training loss every N steps")
    g.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (0: only at the end)")
    g.add_argument("--checkpoint-every", type=int, default=0,
                   help="save a resumable checkpoint every N steps (0: never)")
    g.add_argument("--keep-checkpoints", type=int, default=2, help="resumable checkpoints kept (the newest)")
    g.add_argument("--save-steps", type=_int_list, default=[],
                   help="comma-separated steps whose weights are kept in snapshots/step-S/ (for --rewind none)")
    g.add_argument("--save-every", type=int, default=0,
                   help="keep the weights every N steps in snapshots/step-S/ (for --rewind none)")

    g = p.add_argument_group("network slimming")
    g.add_argument("--self-slimming", action="store_true", help="a learnable coefficient per attention head")
    g.add_argument("--inter-slimming", action="store_true", help="a learnable coefficient per FFN neuron")
    g.add_argument("--l1-self", type=float, default=0.0, help="L1 weight on the head coefficients")
    g.add_argument("--l1-inter", type=float, default=0.0, help="L1 weight on the neuron coefficients")
    g.add_argument("--slim-before", action="store_true", help="head coefficients before the softmax")
    g.add_argument("--soft-by-one", action="store_true", help="off-by-one softmax in the attention")
    g.add_argument("--record-every", type=int, default=1, help="record the coefficients every k steps")
    g.add_argument("--record-chunk", type=int, default=256,
                   help="rows buffered on the device between writes of the records")

    g = p.add_argument_group("prune and retrain a ticket")
    g.add_argument("--prune-plan", default=None, help="a plan JSON (earlybird plan)")
    g.add_argument("--records", default=None, help="records directory of a slimming run (<run>/records)")
    g.add_argument("--prune-step", type=int, default=None, help="the recorded step whose masks are used")
    g.add_argument("--self-pruning-ratio", type=float, default=0.0, help="fraction of heads pruned, in [0, 1)")
    g.add_argument("--inter-pruning-ratio", type=float, default=0.0, help="fraction of FFN neurons pruned, in [0, 1)")
    g.add_argument("--self-pruning-method", choices=SCOPES, default="layerwise")
    g.add_argument("--inter-pruning-method", choices=SCOPES, default="layerwise")
    g.add_argument("--random-prune", type=int, default=None, metavar="SEED",
                   help="random baseline: the same number pruned per layer, chosen at random")
    g.add_argument("--rewind", choices=("init", "none"), default="init",
                   help="init: start the ticket from the slimming run's step-0 weights (the lottery ticket); "
                        "none: from its weights at the pruning step (needs a snapshot there)")
    g.add_argument("--init-checkpoint", default=None,
                   help="the weights the ticket starts from (default <records>/../init, or "
                        "<records>/../snapshots/step-S with --rewind none)")

    g = p.add_argument_group("EB-Train: draw the early bird online and prune in place")
    g.add_argument("--eb-method", choices=EB_METHODS, default=None)
    g.add_argument("--eb-block", choices=("msa", "mlp", "both"), default="msa",
                   help="coefficients the detector watches (both: draw when both have drawn)")
    g.add_argument("--eb-ratio", type=float, default=None,
                   help="pruning ratio of the detector's masks (default: the block's pruning ratio, else 0.3)")
    g.add_argument("--eb-scope", choices=SCOPES, default="layerwise")
    g.add_argument("--eb-cached", type=int, default=None, help="hamming: masks in the FIFO (default 5)")
    g.add_argument("--eb-threshold", type=float, default=None, help="hamming: distance threshold (default 0.1)")
    g.add_argument("--eb-smooth", type=int, default=None, help="slope/mk/adf: moving-average length (default 200)")
    g.add_argument("--eb-window", type=int, default=None, help="slope/mk/adf: smoothed values tested (default 300)")
    g.add_argument("--eb-alpha", type=float, default=None, help="slope/mk/adf: p-value threshold")
    g.add_argument("--eb-every", type=int, default=None, help="check every E steps (default hamming 1, others 100)")
    g.add_argument("--eb-patience", type=int, default=None, help="consecutive passing checks (default 1)")

    # Test-only: stop abruptly after this step, as a kill would (no flush, no final files).
    p.add_argument("--debug-crash-at-step", type=int, default=None, help=argparse.SUPPRESS)
    return p


def ticket_mode(args) -> bool:
    return bool(args.prune_plan or args.records)


def eb_params(args) -> dict:
    """The detector keywords the user set (the rest keep the detector's defaults)."""
    return {kw: getattr(args, dest) for dest, (kw, _) in EB_PARAMS.items() if getattr(args, dest) is not None}


def check_args(args) -> None:
    """Cheap consistency checks of the shared flags; EarlyBirdError names the flag."""
    def positive(name, value, minimum=1):
        if value is not None and value < minimum:
            raise EarlyBirdError(f"--{name} must be >= {minimum}, got {value}")

    positive("max-steps", args.max_steps)
    if args.max_steps is None and not args.num_train_epochs > 0:
        raise EarlyBirdError(f"--num-train-epochs must be > 0, got {args.num_train_epochs}")
    for name in ("per-device-train-batch-size", "per-device-eval-batch-size", "gradient-accumulation-steps",
                 "record-every", "record-chunk", "logging-steps", "keep-checkpoints"):
        positive(name, getattr(args, name.replace("-", "_")))
    for name in ("eval-every", "checkpoint-every", "save-every", "dataloader-num-workers"):
        positive(name, getattr(args, name.replace("-", "_")), 0)
    positive("max-train-samples", args.max_train_samples)
    positive("max-eval-samples", args.max_eval_samples)
    for name in ("learning-rate", "weight-decay", "l1-self", "l1-inter", "max-grad-norm"):
        if getattr(args, name.replace("-", "_")) < 0:
            raise EarlyBirdError(f"--{name} must be >= 0, got {getattr(args, name.replace('-', '_'))}")
    if not 0.0 <= args.warmup_ratio < 1.0:
        raise EarlyBirdError(f"--warmup-ratio must be in [0, 1), got {args.warmup_ratio}")
    if args.resume and args.overwrite_output_dir:
        raise EarlyBirdError("--resume and --overwrite-output-dir contradict each other; pick one")
    if args.l1_self and not args.self_slimming:
        raise EarlyBirdError("--l1-self needs --self-slimming (there are no head coefficients to penalise)")
    if args.l1_inter and not args.inter_slimming:
        raise EarlyBirdError("--l1-inter needs --inter-slimming (there are no neuron coefficients to penalise)")
    for name in ("self-pruning-ratio", "inter-pruning-ratio"):
        try:
            check_ratio(getattr(args, name.replace("-", "_")))
        except EarlyBirdError as err:
            raise EarlyBirdError(f"--{name}: {err}") from None

    if ticket_mode(args):
        if args.prune_plan and args.records:
            raise EarlyBirdError("--prune-plan and --records are two ways to name the pruning; give one")
        if args.records and args.prune_step is None:
            raise EarlyBirdError("--records needs --prune-step (the recorded step whose masks are used)")
        if args.prune_plan and (args.prune_step is not None or args.random_prune is not None):
            raise EarlyBirdError("--prune-step and --random-prune go with --records; a --prune-plan is used as is")
        if args.eb_method:
            raise EarlyBirdError("--eb-method (EB-Train) cannot be combined with --prune-plan/--records")
    else:
        for flag, value in (("--prune-step", args.prune_step), ("--random-prune", args.random_prune),
                            ("--init-checkpoint", args.init_checkpoint)):
            if value is not None:
                raise EarlyBirdError(f"{flag} needs --records or --prune-plan")

    if args.eb_method:
        blocks = ("msa", "mlp") if args.eb_block == "both" else (args.eb_block,)
        need = {"msa": ("self_slimming", "--self-slimming"), "mlp": ("inter_slimming", "--inter-slimming")}
        for block in blocks:
            if not getattr(args, need[block][0]):
                raise EarlyBirdError(f"--eb-block {args.eb_block} watches the {block} coefficients: "
                                     f"pass {need[block][1]}")
        if args.self_pruning_ratio > 0 and not args.self_slimming:
            raise EarlyBirdError("--self-pruning-ratio > 0 in EB-Train needs --self-slimming")
        if args.inter_pruning_ratio > 0 and not args.inter_slimming:
            raise EarlyBirdError("--inter-pruning-ratio > 0 in EB-Train needs --inter-slimming")
        if args.self_pruning_ratio == 0 and args.inter_pruning_ratio == 0:
            raise EarlyBirdError("EB-Train prunes in place when it draws: give --self-pruning-ratio and/or "
                                 "--inter-pruning-ratio > 0")
        if args.eb_ratio is not None:
            try:
                check_ratio(args.eb_ratio)
            except EarlyBirdError as err:
                raise EarlyBirdError(f"--eb-ratio: {err}") from None
        for dest, (_, methods) in EB_PARAMS.items():
            if getattr(args, dest) is not None and args.eb_method not in methods:
                raise EarlyBirdError(f"--{dest.replace('_', '-')} does not apply to --eb-method {args.eb_method}")
    else:
        set_eb = [dest for dest in EB_PARAMS if getattr(args, dest) is not None]
        if set_eb or args.eb_ratio is not None:
            flag = "--" + (set_eb[0] if set_eb else "eb_ratio").replace("_", "-")
            raise EarlyBirdError(f"{flag} needs --eb-method")


def eb_ratio(args) -> float:
    """The detector's mask ratio: --eb-ratio, else the watched block's pruning ratio, else 0.3."""
    if args.eb_ratio is not None:
        return args.eb_ratio
    ratio = args.inter_pruning_ratio if args.eb_block == "mlp" else args.self_pruning_ratio
    return ratio if ratio > 0 else 0.3


def fail(prog: str, message: str, print_it: bool = True) -> int:
    """Print `<prog>: error: <message>` on one line and return exit status 2."""
    if print_it:
        print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    return 2
