"""The flags every entry point shares, declared once: `common_parser()` is an argparse *parent*.

Entry points build `EntryParser(prog=..., parents=[common_parser()])` and add their own model/data flags; the
runner turns the shared flags into typed configs (`earlybird.training.config.TrainConfig.from_args`) before touching
data or models, so bad input fails in one line (`<prog>: error: ...`, exit code 2) before anything starts. The
EB-Train detector flags (`--eb-<parameter>`) are derived from the detectors' own declarations.
"""

from __future__ import annotations

import argparse
import sys

from ..blocks import BLOCK_NAMES
from ..detectors import DETECTORS, add_param_arguments
from ..masks import SCOPES
from ..profiles import DEFAULT_PROFILE, PROFILES


def first_paragraph(doc: str | None) -> str | None:
    """A script's docstring's first paragraph, on one line: its --help description."""
    if not doc:
        return None
    return " ".join(doc.strip().split("\n\n")[0].split())


class EntryParser(argparse.ArgumentParser):
    """argparse with one-line errors: `<prog>: error: <message>` and exit code 2, no usage dump; `doc` (the entry
    point's docstring) gives the description."""

    def __init__(self, *args, doc: str | None = None, **kwargs):
        kwargs.setdefault("description", first_paragraph(doc))
        super().__init__(*args, **kwargs)

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
    g.add_argument("--self-pruning-scope", "--self-pruning-method", choices=SCOPES, default=None,
                   help="layerwise: the same fraction of every layer; global: the smallest over all layers (default: "
                        "the profile's, layerwise)")
    g.add_argument("--inter-pruning-scope", "--inter-pruning-method", choices=SCOPES, default=None,
                   help="as --self-pruning-scope, for the FFN neurons (default: the profile's: layerwise; global "
                        "under --eb-profile original)")
    g.add_argument("--random-prune", type=int, default=None, metavar="SEED",
                   help="random baseline: the same number pruned per layer, chosen at random")
    g.add_argument("--rewind", choices=("init", "none"), default="init",
                   help="init: start the ticket from the slimming run's step-0 weights (the lottery ticket); "
                        "none: from its weights at the pruning step (needs a snapshot there)")
    g.add_argument("--init-checkpoint", default=None,
                   help="the weights the ticket starts from (default <records>/../init, or "
                        "<records>/../snapshots/step-S with --rewind none)")

    g = p.add_argument_group("EB-Train: draw the early bird online and prune in place")
    g.add_argument("--eb-method", choices=tuple(DETECTORS), default=None)
    g.add_argument("--eb-block", choices=(*BLOCK_NAMES, "both"), default="msa",
                   help="coefficients the detector watches (both: draw when both have drawn)")
    g.add_argument("--eb-ratio", type=float, default=None,
                   help="pruning ratio of the detector's masks (default: the block's pruning ratio, else 0.3)")
    g.add_argument("--eb-scope", choices=SCOPES, default=None,
                   help="masks per layer or global (default: the profile's: layerwise; under --eb-profile original "
                        "layerwise for msa, global for mlp)")
    g.add_argument("--eb-profile", choices=tuple(PROFILES), default=DEFAULT_PROFILE,
                   help="detection profile: the mask rule (also of the in-place prune), the detector's variant and "
                        "defaults, the default scopes (default paper; original: the original research code's rules, "
                        "see docs/library.md)")
    g.add_argument("--eb-scale", action="store_true",
                   help="scale the study's step-counted detector parameters (smoothing, window, check period; chosen "
                        "for its 14,774-step run) down to this run's length; --eb-<parameter> flags given are kept")
    add_param_arguments(p, prefix="eb_", flag_prefix="eb-")

    # Test-only: stop abruptly after this step, as a kill would (no flush, no final files).
    p.add_argument("--debug-crash-at-step", type=int, default=None, help=argparse.SUPPRESS)
    return p


def fail(prog: str, message: str, print_it: bool = True) -> int:
    """Print `<prog>: error: <message>` on one line and return exit status 2."""
    if print_it:
        print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)
    return 2
