"""Building a ticket: the plan (given, or made from records), the weights it starts from, pruned and folded.

A ticket is the slimming run's model with the plan's heads and neurons physically removed and the
coefficients multiplied into the weights (`fold_slimming`): a plain smaller model, retrained with the
same budget. `--rewind init` starts it from the slimming run's step-0 weights (the lottery ticket),
`--rewind none` from its weights at the pruning step (a snapshot saved with --save-steps/--save-every).
"""

from __future__ import annotations

import copy
from pathlib import Path

from ..errors import EarlyBirdError
from ..layout import RunLayout, records_path, resolve_input
from ..plans import load_plan, make_plan
from ..records import load_records
from ..slimming import apply_plan, fold_slimming
from .config import PruningConfig, TicketConfig


def resolve_plan(ticket: TicketConfig, pruning: PruningConfig) -> dict:
    """The plan named by --prune-plan, or made from --records at --prune-step (EarlyBirdError if not)."""
    if ticket.prune_plan:
        return load_plan(resolve_input(ticket.prune_plan, "plan", "--prune-plan"))
    records = load_records(records_path(ticket.records, "--records"))
    try:
        return make_plan(records, ticket.prune_step, pruning.self_pruning_ratio, pruning.inter_pruning_ratio,
                         pruning.self_pruning_scope, pruning.inter_pruning_scope, random_seed=ticket.random_prune,
                         **pruning.structure)
    except EarlyBirdError as err:
        raise EarlyBirdError(f"--records {ticket.records}: {err}") from None


def plan_step(ticket: TicketConfig, plan) -> int | None:
    if ticket.prune_step is not None:
        return ticket.prune_step
    return (plan.get("provenance") or {}).get("step")


def _slimming_run(ticket: TicketConfig, plan) -> RunLayout | None:
    records = ticket.records or (plan.get("provenance") or {}).get("records")
    return None if not records else RunLayout.of_records(records_path(records))


def weights_dir(ticket: TicketConfig, plan) -> Path:
    """Where the ticket's starting weights are: --init-checkpoint, else the slimming run's init/ or snapshot."""
    if ticket.init_checkpoint:
        path = Path(ticket.init_checkpoint)
        if not path.is_dir():
            raise EarlyBirdError(f"--init-checkpoint {path}: no such directory")
        return resolve_input(path, "weights", "--init-checkpoint")
    run = _slimming_run(ticket, plan)
    if run is None:
        raise EarlyBirdError("--prune-plan does not say which records it came from (no provenance.records): "
                             "pass --init-checkpoint DIR with the weights to start the ticket from")
    if ticket.rewind == "init":
        if not run.init.is_dir():
            raise EarlyBirdError(f"--rewind init needs the slimming run's step-0 weights: {run.init} does not exist "
                                 "(pass --init-checkpoint DIR)")
        return run.init
    step = plan_step(ticket, plan)
    if step is None:
        raise EarlyBirdError("--rewind none: the plan names no step; pass --prune-step or --init-checkpoint")
    candidates = run.weights_at(step)
    for path in candidates:
        if path.is_dir():
            return path
    raise EarlyBirdError(
        f"--rewind none needs the weights at step {step}: {candidates[0]} does not exist "
        f"(saved steps: {', '.join(map(str, run.saved_steps())) or 'none'}); re-run the slimming run with "
        f"--save-steps {step} (or --save-every N) or pass --init-checkpoint DIR"
    )


def build_ticket(model_class, path: Path, plan: dict, *, slimming: dict, where: str):
    """Load the weights, prune them as the plan says and fold the coefficients (a plain smaller model).

    `slimming` holds the slimming flags of the retraining: with any of them on, fresh coefficients at 1
    are added back to the pruned model (tickets are otherwise trained as plain models).
    """
    try:
        model = model_class.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise EarlyBirdError(f"cannot load the ticket's weights from {path}: {' '.join(str(err).split())[:300]}") from None
    apply_plan(model, plan, where)
    fold_slimming(model)
    if slimming.get("self_slimming") or slimming.get("inter_slimming"):
        config = copy.deepcopy(model.config)
        for key, value in slimming.items():
            setattr(config, key, value)
        slim = model_class(config)
        missing, unexpected = slim.load_state_dict(model.state_dict(), strict=False)
        if unexpected or any(not k.endswith("slimming_coef") for k in missing):
            raise EarlyBirdError(f"re-adding slimming coefficients failed (missing {missing[:3]}, unexpected {unexpected[:3]})")
        model = slim
    return model
