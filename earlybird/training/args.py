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
from ..errors import EarlyBirdError
from ..masks import DEFAULT_GQA_RULE, GQA_RULES, SCOPES
from ..profiles import DEFAULT_PROFILE, PROFILES
from .config import DEFAULT_CHECKPOINT_MINUTES, DEFAULT_DDP_TIMEOUT_MINUTES
from .trackers import REPORT_TO


def first_paragraph(doc: str | None) -> str | None:
    """A script's docstring's first paragraph, on one line: its --help description."""
    if not doc:
        return None
    return " ".join(doc.strip().split("\n\n")[0].split())


class EntryParser(argparse.ArgumentParser):
    """argparse with one-line errors: `<prog>: error: <message>` and exit code 2, no usage dump; `doc` (the entry
    point's docstring) gives the description. `--config FILE` (when the parser has it) makes the file's values the
    defaults before the command line is parsed, so flags given override them."""

    def __init__(self, *args, doc: str | None = None, **kwargs):
        kwargs.setdefault("description", first_paragraph(doc))
        super().__init__(*args, **kwargs)

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")

    def parse_known_args(self, args=None, namespace=None):
        args = sys.argv[1:] if args is None else list(args)
        dests = {action.dest for action in self._actions}
        if "config" in dests:
            pre = argparse.ArgumentParser(prog=self.prog, add_help=False)
            pre.error = self.error
            pre.add_argument("--config", default=None)
            if {"resume", "output_dir"} <= dests:
                pre.add_argument("--resume", nargs="?", const=True, default=False)
                pre.add_argument("--output-dir", default=None)
            given = pre.parse_known_args(args)[0]
            try:
                # --resume: the run as it was (its args.json), then a --config file, then the command line
                if getattr(given, "resume", False) and given.output_dir:
                    self.set_defaults(**resume_defaults(self, given.output_dir))
                if given.config is not None:
                    self.set_defaults(**config_defaults(self, given.config))
            except EarlyBirdError as err:
                self.error(str(err))
        return super().parse_known_args(args, namespace)


# Keys of a config file that are not taken from it: they say what this invocation does with its output directory (a
# resumed run's args.json holds resume=true, and giving it back must start a new run), or name the file itself.
CONFIG_IGNORED = ("config", "resume", "overwrite_output_dir")


def _file_keys(parser: argparse.ArgumentParser) -> dict:
    """{key: action}: each flag's dest, and each of its long option names in dest form (older names included, e.g.
    self_pruning_method for --self-pruning-scope); never a --no-X of a boolean pair (it would invert the value)."""
    keys = {}
    for action in parser._actions:
        if action.dest in (argparse.SUPPRESS, "help"):
            continue
        keys[action.dest] = action
        for option in action.option_strings:
            if option.startswith("--") and not (isinstance(action, argparse.BooleanOptionalAction)
                                                and option.startswith("--no-")):
                keys.setdefault(option[2:].replace("-", "_"), action)
    return keys


def _value_kind(action) -> tuple:
    """(the Python type a file's value must have, whether null is allowed) for a flag's action."""
    kind = action.type
    optional = action.default is None
    param = getattr(kind, "__self__", None)  # a detector parameter: its declaration's Param.parse
    if param is not None and hasattr(param, "kind"):
        return param.kind, optional or param.optional
    if kind is _int_list:
        return list, optional
    if kind in (int, float):
        return kind, optional
    return str, optional


def _file_value(action, key: str, value, where: str):
    """A config file's value for a flag, checked as strictly as the command line would (a string is parsed as the
    command line would parse it)."""
    def wrong(expected):
        raise EarlyBirdError(f"--config {where}: key {key!r} must be {expected}, got {value!r}")

    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            wrong("true or false")
        return value
    if isinstance(action, argparse.BooleanOptionalAction):
        if value is not None and not isinstance(value, bool):
            wrong("true, false or null")
        return value
    kind, optional = _value_kind(action)
    expected = {int: "an integer", float: "a number", str: "a string",
                list: "a list of integers >= 0"}[kind] + (" or null" if optional else "")
    if value is None:
        if not optional:
            wrong(expected)
        return None
    if isinstance(value, str) and action.type is not None and kind is not str:
        try:
            value = action.type(value)
        except (TypeError, ValueError, argparse.ArgumentTypeError):
            wrong(expected)
    elif kind is list:
        if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
            wrong(expected)
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            wrong(expected)
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            wrong(expected)
        value = float(value)
    elif not isinstance(value, str):
        wrong(expected)
    elif action.type is not None:
        value = action.type(value)
    if action.choices is not None and value not in action.choices:
        wrong(f"one of {', '.join(map(str, action.choices))}")
    return value


def read_config_file(path) -> dict:
    """The mapping a --config file holds: JSON, or YAML for .yaml / .yml (EarlyBirdError naming the file)."""
    from pathlib import Path

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise EarlyBirdError(f"--config {path}: cannot read it ({getattr(err, 'strerror', None) or err})") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            content = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise EarlyBirdError(f"--config {path}: not valid YAML ({' '.join(str(err).split())})") from None
    else:
        import json

        try:
            content = json.loads(text)
        except ValueError as err:
            raise EarlyBirdError(f"--config {path}: not valid JSON ({err}); YAML files end in .yaml or .yml") from None
    if not isinstance(content, dict):
        raise EarlyBirdError(f"--config {path}: expected an object of flag names and values, got "
                             f"{type(content).__name__}")
    return content


def config_defaults(parser: argparse.ArgumentParser, path) -> dict:
    """{dest: value} of a --config file for `parser`: every key must name one of its flags (by dest, or an older
    name) with a value of the flag's type. A flag the file sets is no longer required on the command line."""
    keys = _file_keys(parser)
    values = {}
    for key, value in read_config_file(path).items():
        if key in CONFIG_IGNORED:
            continue
        action = keys.get(key)
        if action is None:
            raise EarlyBirdError(f"--config {path}: unknown key {key!r}; expected the flags of {parser.prog} by their "
                                 "names with underscores (e.g. max_steps for --max-steps)")
        values[action.dest] = _file_value(action, key, value, str(path))
        action.required = False
    return values


def _resume_mode(text: str):
    if text != "auto":
        raise argparse.ArgumentTypeError(f"expected nothing or auto, got {text!r}")
    return text


# Keys of a run's args.json that `--resume` does not take as defaults: what this invocation does (its directory, which
# the command line names), and the test-only crash (the resumed run must not crash again at the same step).
RESUME_IGNORED = (*CONFIG_IGNORED, "output_dir", "debug_crash_at_step")


def resume_defaults(parser: argparse.ArgumentParser, output_dir) -> dict:
    """{dest: value} of the run in `output_dir` (its args.json; {} when there is none, or nothing to resume): what
    `--resume` continues.

    Every flag the run was started with becomes the default, so the bare `--output-dir RUN --resume` continues the
    run as it was, and the flags a command gives are then compared with the run's (earlybird.training.resume). A key
    this version of the program does not know is left out (it is not compared either)."""
    from pathlib import Path

    from ..layout import RunLayout, read_json

    run = RunLayout(Path(output_dir))
    if run.latest_checkpoint() is None and not run.results.is_file():
        return {}  # nothing to continue (--resume auto starts it over): the command line is the run
    path = run.args
    saved = read_json(path)
    if saved is None:
        return {}
    if not isinstance(saved, dict):
        raise EarlyBirdError(f"--resume: {path} is not a JSON object; cannot tell which flags the run was started with")
    keys = _file_keys(parser)
    values = {}
    for key, value in saved.items():
        action = keys.get(key)
        if key in RESUME_IGNORED or action is None:
            continue
        values[action.dest] = _file_value(action, key, value, f"{path} (the run --resume continues)")
        action.required = False
    return values


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
    g.add_argument("--resume", nargs="?", const=True, default=False, type=_resume_mode, metavar="auto",
                   help="continue the run in --output-dir from its last checkpoint, as it was (its args.json gives "
                        "every flag not given here; a flag given must keep the run's value); --resume auto: continue "
                        "if there is a checkpoint, start if there is no run, start over in place a run stopped before "
                        "its first checkpoint, leave a finished run as it is -- one command for every resubmission")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--config", default=None, metavar="FILE",
                   help="a run's args.json, or a JSON / YAML file of the same keys (flag names with underscores): "
                        "its values replace the defaults, flags given here override them (--resume and "
                        "--overwrite-output-dir come from the command line only)")
    g.add_argument("--cache-dir", default=None, help="datasets / hub cache directory")
    g.add_argument("--disable-tqdm", action="store_true", help="no progress bar")
    g.add_argument("--ddp-timeout-minutes", type=float, default=DEFAULT_DDP_TIMEOUT_MINUTES,
                   help="several processes: how long one waits for the others in a collective before the job stops "
                        f"(default {DEFAULT_DDP_TIMEOUT_MINUTES:g}: the main process may prepare the data, e.g. index "
                        "ImageNet or tokenise SQuAD, while the others wait; torch's own default is 10 under NCCL)")
    g.add_argument("--exit-code-on-preempt", type=int, default=None, metavar="N",
                   help="exit status after a SIGTERM / SIGINT stopped the run with a checkpoint (default 128 + the "
                        "signal's number: 143 for SIGTERM, 130 for SIGINT); see docs/training.md#preemption")

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
    g.add_argument("--report-to", choices=REPORT_TO, default="none",
                   help="experiment trackers (accelerate's) beside metrics.jsonl, files under <output-dir>/tracking/; "
                        "all: every one installed")
    g.add_argument("--eval-every", type=int, default=0, help="evaluate every N steps (0: only at the end)")
    g.add_argument("--checkpoint-every", type=int, default=None,
                   help="save a resumable checkpoint every N steps; 0 (without --checkpoint-minutes): none at all")
    g.add_argument("--checkpoint-minutes", type=float, default=None,
                   help=f"save a resumable checkpoint when M minutes have passed since the last one, read at the "
                        f"logging steps (default {DEFAULT_CHECKPOINT_MINUTES:g} when neither this nor "
                        "--checkpoint-every is given; 0: off)")
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
                   help="layerwise: the same fraction of every layer; global: the smallest over all layers; uniform: "
                        "the same number in every layer, the block's count spread evenly (default: the profile's, "
                        "layerwise)")
    g.add_argument("--inter-pruning-scope", "--inter-pruning-method", choices=SCOPES, default=None,
                   help="as --self-pruning-scope, for the FFN neurons (default: the profile's: layerwise; global "
                        "under --eb-profile original)")
    g.add_argument("--gqa-rule", choices=GQA_RULES, default=DEFAULT_GQA_RULE,
                   help="grouped-query attention (Llama, Qwen3): per-group prunes the same number of query heads in "
                        "every KV group (the least important of each); groups prunes whole KV groups (by their mean "
                        "importance). Used by the plans and EB-Train's masks (default per-group)")
    g.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="keep a multiple of N units per layer, rounded up (prunes fewer): neurons, heads, or under "
                        "grouped-query attention the heads per KV group (per-group) or the KV groups (groups)")
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
