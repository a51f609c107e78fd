"""The ``earlybird`` command line: detect, hamming-table, plan, report, study.

Subcommands live in one registry (:data:`SUBCOMMANDS`); a new one is added with
:func:`register` (a function adding its arguments and a function running it). Bad input
prints one line ``earlybird: error: ...`` on stderr and exits with status 2.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import sys
from dataclasses import dataclass
from typing import Callable

from . import __version__
from .blocks import BLOCK_NAMES, MLP, MSA
from .detectors import (DETECTORS, STUDY_STEPS, add_param_arguments, check_applicable, describe_scaling,
                        detect_many, detector_class, first_test_step, given_params, hamming_table, make_detector,
                        never_tests_message, scaled_params)
from .layout import records_path
from .errors import EarlyBirdError
from .masks import DEFAULT_GQA_RULE, GQA_RULES, SCOPES, check_ratio, check_round_to
from .plans import make_plan, save_plan
from .profiles import DEFAULT_PROFILE, PROFILES, get_profile
from .records import load_records

PROG = "earlybird"


class _UsageError(Exception):
    pass


class _Remember(argparse.Action):
    """Store the value and the option string the user typed (an alias or the canonical name), for messages."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        typed = dict(getattr(namespace, "typed_flags", None) or {})
        typed[self.dest] = option_string
        namespace.typed_flags = typed


class _Parser(argparse.ArgumentParser):
    """Argument errors become one line instead of usage + message (main prints it)."""

    def error(self, message):
        raise _UsageError(message)


@dataclass
class Subcommand:
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


SUBCOMMANDS: dict[str, Subcommand] = {}


def register(name: str, help: str, add_arguments, run) -> None:
    """Add a subcommand: ``add_arguments(parser)`` declares it, ``run(args) -> exit status`` runs it."""
    SUBCOMMANDS[name] = Subcommand(help, add_arguments, run)


# --------------------------------------------------------------------------- profiles and scopes

_SCOPE_DEFAULTS = "; ".join(f"{name}: " + ", ".join(f"{b} {s}" for b, s in profile.scopes.items())
                            for name, profile in PROFILES.items())


def _add_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", choices=tuple(PROFILES), default=DEFAULT_PROFILE,
                   help="detection profile: " + "; ".join(f"{name} = {profile.summary}"
                                                         for name, profile in PROFILES.items())
                        + f" (default {DEFAULT_PROFILE}; see docs/library.md)")


def _add_scope(p: argparse.ArgumentParser, *flags, dest: str = "scope", what: str = "masks") -> None:
    p.add_argument(*(flags or ("--scope",)), dest=dest, choices=SCOPES, default=None,
                   help=f"{what} per layer (layerwise), over all layers (global), or the same number in every "
                        f"layer (uniform); default the profile's ({_SCOPE_DEFAULTS})")


def _add_gqa_rule(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gqa-rule", choices=GQA_RULES, default=DEFAULT_GQA_RULE,
                   help="heads of a grouped-query attention (Llama, Qwen3; from the records' meta): per-group prunes "
                        "the same number of query heads in each KV group, groups whole KV groups (default per-group)")


# --------------------------------------------------------------------------- detect

def _add_detect(p: argparse.ArgumentParser) -> None:
    p.add_argument("records", help="run directory, records directory or .npy file (ours or the original layout)")
    p.add_argument("--block", choices=(*BLOCK_NAMES, "both"), default="msa",
                   help="msa (heads), mlp (neurons) or both (one after the other in this process: the records are "
                        "loaded once); default msa")
    p.add_argument("--ratio", type=float, required=True, help="pruning ratio in [0, 1)")
    _add_profile(p)
    _add_scope(p)
    _add_gqa_rule(p)
    p.add_argument("--method", required=True, metavar="{" + ",".join(DETECTORS) + "}[,...]|all",
                   help="detector, or several separated by commas (or all): masks and norms are computed once")
    p.add_argument("--scale", action="store_true",
                   help="scale the study's step-counted parameters (smoothing, window, check period; chosen for "
                        f"its {STUDY_STEPS:,}-step run) down to the records' length, as `earlybird report` does; "
                        "parameters given explicitly are kept")
    p.add_argument("--full-trace", action="store_true", help="keep checking after the draw (for plots)")
    p.add_argument("--json", action="store_true", help="print one JSON object per method instead of the draw step "
                   "(with draw_index too under a profile that reports the original code's numbers)")
    add_param_arguments(p)


def _methods(text: str, profile: str = DEFAULT_PROFILE) -> list[str]:
    registry = get_profile(profile).detectors
    methods = list(registry) if text == "all" else [m.strip() for m in text.split(",") if m.strip()]
    for method in methods:
        detector_class(method, profile)
    if len(set(methods)) != len(methods) or not methods:
        raise EarlyBirdError(f"--method {text}: expected detectors separated by commas, each once, or all")
    return methods


def _detector_params(args, methods: list[str], total_steps: int, block: str) -> dict[str, dict]:
    """{method: parameters} for `block`: the given ones (each must apply to some selected method), over the scaled
    study's."""
    given = given_params(args)
    profile = args.profile
    if len(methods) == 1:
        check_applicable(methods[0], given, profile=profile)
    for name in given:
        if not any(name in detector_class(m, profile).param_spec() for m in methods):
            raise EarlyBirdError(f"--{name} does not apply to --method {args.method}")
    params = {}
    for method in methods:
        spec = detector_class(method, profile).param_spec()
        scaled, factor = scaled_params(method, total_steps, profile=profile, block=block) if args.scale else ({}, 1.0)
        if scaled:
            kept = {k: v for k, v in scaled.items() if k not in given}
            where = f"{block} " if args.block == "both" else ""
            print(f"earlybird: {where}{method}: {describe_scaling(method, total_steps, kept, factor, profile, block)}",
                  file=sys.stderr)
        params[method] = {**scaled, **{k: v for k, v in given.items() if k in spec}}
    return params


def _check_ratios(args, *flags) -> None:
    """Name the flag in a bad ratio's message (the library's message names only the value); flags are
    (flag, dest) pairs, the dest holding one ratio or a list of them."""
    for flag, dest in flags:
        flag = (getattr(args, "typed_flags", None) or {}).get(dest, flag)
        values = getattr(args, dest)
        for value in values if isinstance(values, list) else [values]:
            try:
                check_ratio(value)
            except EarlyBirdError as err:
                raise EarlyBirdError(f"{flag}: {err}") from None


def _run_detect(args) -> int:
    methods = _methods(args.method, args.profile)
    _check_ratios(args, ("--ratio", "ratio"))
    records = load_records(records_path(args.records))
    total = int(records.steps[-1]) if len(records.steps) else 0
    blocks = BLOCK_NAMES if args.block == "both" else (args.block,)
    params = {block: _detector_params(args, methods, total, block) for block in blocks}
    for block in blocks:
        for method in methods:
            # A detector that can never test would print "none" as if it had looked and found nothing: refuse.
            message = never_tests_message(make_detector(method, args.profile, block, **params[block][method]),
                                          records.steps, f"{args.records} ({block})")
            if message:
                # --scale is offered only where the scaled parameters would test on these records
                scaled = {**scaled_params(method, total, profile=args.profile, block=block)[0],
                          **{k: v for k, v in given_params(args).items() if k in params[block][method]}}
                helps = not args.scale and first_test_step(make_detector(method, args.profile, block, **scaled),
                                                           records.steps) is not None
                hint = f"; or --scale to scale the study's parameters to these {total} steps" if helps else ""
                raise EarlyBirdError(message + hint)
    for block in blocks:
        results = detect_many(records, block, args.ratio, args.scope, params[block],
                              stop_at_draw=not args.full_trace, profile=args.profile, gqa_rule=args.gqa_rule)
        for method, result in results.items():
            if args.json:
                print(result.to_json())  # (its params name the block)
                continue
            step = "none" if result.draw_step is None else result.draw_step
            name = " ".join(([block] if len(blocks) > 1 else []) + ([method] if len(methods) > 1 else []))
            print(f"{name}: {step}" if name else step)
    return 0


# --------------------------------------------------------------------------- hamming-table


def _add_hamming_table(p: argparse.ArgumentParser) -> None:
    p.add_argument("records", help="run directory, records directory or .npy file (ours or the original layout)")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.8],
                   help="pruning ratios of the masks, each in [0, 1) (default 0.3 0.8: the study's)")
    p.add_argument("--cached", type=int, nargs="+", default=[5, 50, 100, 500, 2000],
                   help="FIFO sizes N: masks compared (default 5 50 100 500 2000: the study's table)")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.1, 0.01],
                   help="distance thresholds eps, each in (0, 1] (default 0.1 0.01)")
    p.add_argument("--block", choices=BLOCK_NAMES, default="msa", help="msa (heads) or mlp (neurons); default msa")
    _add_profile(p)
    _add_scope(p)
    p.add_argument("--every", type=int, default=1, help="check every E training steps (default 1)")
    p.add_argument("--csv", action="store_true", help="CSV instead of a markdown table")


def _run_hamming_table(args) -> int:
    _check_ratios(args, ("--ratios", "ratios"))
    records = load_records(records_path(args.records))
    profile = get_profile(args.profile)
    for n in args.cached:
        if n < 2:
            raise EarlyBirdError(f"--cached values must be >= 2; got {n}")
    threshold = detector_class("hamming", profile.name).param_spec()["threshold"]
    for eps in args.thresholds:
        try:
            threshold.check(eps)
        except EarlyBirdError:
            raise EarlyBirdError(f"--thresholds values must be in {threshold.interval}; got {eps}") from None
    scope = profile.scope(args.block, args.scope)
    # a profile that reports the original code's numbers prints its record indices
    table = hamming_table(records, block=args.block, ratios=args.ratios, cached=args.cached,
                          thresholds=args.thresholds, scope=scope, every=args.every, profile=profile.name,
                          indices=profile.reports_index)
    columns = [(r, t) for r in args.ratios for t in args.thresholds]
    rows = [[n] + [table[(float(r), int(n), float(t))] for r, t in columns] for n in args.cached]
    if args.csv:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["cached"] + [f"ratio_{r:g}_threshold_{t:g}" for r, t in columns])
        for row in rows:
            writer.writerow(["" if v is None else v for v in row])
        sys.stdout.write(out.getvalue())
    else:
        header = ["cached masks"] + [f"ratio {r:g}, eps {t:g}" for r, t in columns]
        print("| " + " | ".join(header) + " |")
        print("|" + "---:|" * len(header))
        for row in rows:
            print("| " + " | ".join("none" if v is None else str(v) for v in row) + " |")
        where = f"block {args.block}, scope {scope}" + ("" if profile.name == DEFAULT_PROFILE else
                                                        f", profile {profile.name}")
        print(f"\nTotal steps: {records.total_steps} ({where})"
              + (". Numbers are 0-based record indices, as the original code prints them." if profile.reports_index
                 else ""))
    return 0


# --------------------------------------------------------------------------- plan


def _add_plan(p: argparse.ArgumentParser) -> None:
    p.add_argument("records", help="run directory, records directory or .npy file")
    p.add_argument("--step", type=int, required=True, help="a recorded training step")
    # The training flags' names (the older --self-ratio / --self-scope ... stay as aliases).
    p.add_argument("--self-pruning-ratio", "--self-ratio", dest="self_ratio", type=float, required=True, action=_Remember,
                   help="fraction of attention heads pruned, in [0, 1)")
    p.add_argument("--inter-pruning-ratio", "--inter-ratio", dest="inter_ratio", type=float, required=True, action=_Remember,
                   help="fraction of FFN neurons pruned, in [0, 1)")
    _add_scope(p, "--self-pruning-scope", "--self-scope", dest="self_scope", what="heads")
    _add_scope(p, "--inter-pruning-scope", "--inter-scope", dest="inter_scope", what="neurons")
    _add_profile(p)
    _add_gqa_rule(p)
    p.add_argument("--round-to", type=int, default=1, metavar="N",
                   help="keep a multiple of N units per layer, rounded up (prunes fewer): neurons, heads, or under "
                        "grouped-query attention the heads per KV group (per-group) or the KV groups (groups)")
    p.add_argument("--random", type=int, metavar="SEED", help="random baseline with the same per-layer counts")
    p.add_argument("-o", "--output", required=True, help="plan JSON to write")


def _round_to(value) -> int:
    try:
        return check_round_to(value)
    except EarlyBirdError as err:
        raise EarlyBirdError(f"--round-to: {err}") from None


def _run_plan(args) -> int:
    _check_ratios(args, ("--self-pruning-ratio", "self_ratio"), ("--inter-pruning-ratio", "inter_ratio"))
    plan = make_plan(records_path(args.records), args.step, args.self_ratio, args.inter_ratio, args.self_scope,
                     args.inter_scope, random_seed=args.random, profile=args.profile, gqa_rule=args.gqa_rule,
                     round_to=_round_to(args.round_to))
    save_plan(plan, args.output)
    heads = sum(len(v) for v in plan[MSA.plan_key].values())
    neurons = sum(len(v) for v in plan[MLP.plan_key].values())
    print(f"wrote {args.output}: {heads} heads and {neurons} intermediate neurons pruned at step {args.step}")
    return 0


register("detect", "draw step of an early-bird detector over recorded coefficients", _add_detect, _run_detect)
register("hamming-table", "table of Hamming-rule draw steps (cached masks x ratio x threshold)",
         _add_hamming_table, _run_hamming_table)
register("plan", "write which heads and neurons to prune at a recorded step", _add_plan, _run_plan)


# --------------------------------------------------------------------------- report


def _add_report(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", help="the slimming run (run directory, records directory or .npy) first, "
                   "then any ticket / dense / EB-Train run directories")
    p.add_argument("-o", "--output", help="output directory (default: <first run>/report)")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.3, 0.8],
                   help="pruning ratios of the masks, each in [0, 1) (default 0.3 0.8: the study's)")
    _add_profile(p)
    _add_scope(p)
    p.add_argument("--layer", type=int, default=0, help="layer whose coefficient trajectories are plotted")
    p.add_argument("--no-scale", action="store_true",
                   help="use the study's stationarity parameters as they are, even on a shorter run")
    p.add_argument("--cached", type=int, nargs="+", default=None, help="Hamming grid: FIFO sizes")
    p.add_argument("--thresholds", type=float, nargs="+", default=None, help="Hamming grid: thresholds")


def _run_report(args) -> int:
    from .report import build_report  # matplotlib is imported only for this subcommand

    _check_ratios(args, ("--ratios", "ratios"))
    grid = {k: tuple(v) for k, v in (("cached", args.cached), ("thresholds", args.thresholds)) if v}
    build_report(args.runs, args.output, ratios=args.ratios, scope=args.scope, layer=args.layer,
                 scale=not args.no_scale, hamming_grid=grid, profile=args.profile,
                 log=lambda line: print(line, file=sys.stderr))
    return 0


register("report", "the study's figures and tables (report.md + PNGs) for a slimming run and its tickets",
         _add_report, _run_report)


# --------------------------------------------------------------------------- study


def _add_study(p: argparse.ArgumentParser) -> None:
    p.add_argument("studies", nargs="+", help="the study directory of each seed (reproduce's output, one per seed)")
    p.add_argument("-o", "--output", required=True, help="where summary.md and its figure go")


def _run_study(args) -> int:
    from .study import summarize  # matplotlib is imported only here

    summarize(args.studies, args.output, log=lambda line: print(line, file=sys.stderr))
    return 0


register("study", "mean ± sd over seeds of the same study: tickets by pruning step, each detector's draw and regret",
         _add_study, _run_study)


# --------------------------------------------------------------------------- export

from .export import add_export_arguments, run_export  # noqa: E402 -- light at import: torch is loaded by the export

register("export", "a pruned ticket for machines without the patch: a transformers folder (trust_remote_code) or ONNX",
         add_export_arguments, run_export)


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Early-bird lottery tickets for Transformers.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, command in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(_run=command.run)
    return parser


def _fail(message: str) -> int:
    print(f"{PROG}: error: " + " ".join(str(message).split()), file=sys.stderr)
    return 2


def main(argv=None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 bad input)."""
    try:
        args = build_parser().parse_args(argv)
        return int(args._run(args) or 0)
    except _UsageError as exc:
        return _fail(exc)
    except EarlyBirdError as exc:
        return _fail(exc)
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, as other Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        return _fail(f"{where}{exc.strerror or exc}")


if __name__ == "__main__":
    sys.exit(main())
