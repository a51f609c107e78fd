"""`run(prog, args, build_task)`: what every entry point's main() does once its flags are parsed.

Order matters: every check that can fail on bad input (flags, run directory, records, plan, data,
model) runs before the run directory is touched and before any training step, and an EarlyBirdError
becomes one line `<prog>: error: ...` with exit status 2.
"""

from __future__ import annotations

import sys
import time

from ..errors import EarlyBirdError
from ..blocks import BLOCKS
from ..layout import STEPS_FILE, CheckpointLayout, RunLayout, block_file
from ..masks import head_group_size
from ..slimming import encoder_layers, kept_sizes, model_shape
from .args import fail
from .config import TrainConfig
from .ebtrain import EBTrain
from .loop import SimulatedCrash, Trainer, check_resumable, read_checkpoint_state, step_budget
from .preempt import Preemption
from .resume import check_same_flags, finished_results
from .rundir import RunDir
from .tickets import build_ticket, resolve_plan, weights_dir
from .trackers import Tracking


def _cpu_processes() -> bool:
    """Several processes and no CUDA: run them on the CPU (gloo). accelerate 1.15 launches one process for
    `--cpu --num_processes N`; N CPU processes come from `--multi_gpu --num_processes N` (torchrun), and
    without this they would each run alone instead of together."""
    import os

    import torch

    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _single_cpu_launch() -> bool:
    """`accelerate launch --cpu --num_processes N>1` sets MASTER_ADDR but starts a single process."""
    import os

    return (os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
            and "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ)


def _process_group_kwargs(minutes: float):
    """--ddp-timeout-minutes for the process group accelerate starts (its barriers and all-reduces)."""
    from datetime import timedelta

    from accelerate.utils import InitProcessGroupKwargs

    return InitProcessGroupKwargs(timeout=timedelta(minutes=minutes))


def _quiet_libraries(is_main: bool) -> None:
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" / "Writing model shards"
    datasets.utils.logging.set_verbosity_error()
    if not is_main:
        datasets.utils.logging.disable_progress_bar()


def _reset_accelerate(accelerator) -> None:
    """Let the next in-process run (tests) build a fresh Accelerator; a launched process just exits."""
    if accelerator is None or accelerator.num_processes > 1:
        return
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def check_model_fits_data(task, model) -> None:
    """The data's labels must fit the model's classifier and its tokens the model's embeddings (a ticket or a
    resumed model keeps the head and vocabulary it was made with)."""
    config = model.config
    if task.num_labels is not None and task.num_labels > getattr(config, "num_labels", task.num_labels):
        raise EarlyBirdError(
            f"the training data ({task.info.get('dataset')}) has labels 0..{task.num_labels - 1} but the model's "
            f"classifier has {config.num_labels} outputs (labels 0..{config.num_labels - 1}); expected data with "
            "the classes the model was made for")
    side = getattr(config, "image_size", None)
    if task.image_size is not None and side is not None and task.image_size != side:
        raise EarlyBirdError(f"the images are prepared at {task.image_size}x{task.image_size} but the model takes "
                             f"{side}x{side} (its config.image_size): expected --image-size {side}")
    vocab = getattr(config, "vocab_size", None)
    if task.vocab_size is not None and vocab is not None and task.vocab_size > vocab:
        raise EarlyBirdError(
            f"the tokenizer has {task.vocab_size} tokens but the model's embeddings hold {vocab} (config.vocab_size): "
            "a tokenizer from another model? expected len(tokenizer) <= vocab_size")


def check_shared_output_dir(rundir, accelerator) -> None:
    """Several processes: every one must see the main process's --output-dir. Each saves its RNG state into the
    checkpoints and each reads the checkpoint on --resume, so with several machines the directory must be on a file
    system they share; a machine with a directory of its own would fail at the first checkpoint. The main process
    writes a probe file of a fresh name, every process looks for it, and all learn the count (one all-reduce) and
    stop together."""
    if accelerator.num_processes == 1:
        return
    import uuid

    import torch
    from accelerate.utils import broadcast_object_list

    name = broadcast_object_list([f".earlybird-shared-{uuid.uuid4().hex}"], from_process=0)[0]
    probe = rundir.path / name
    if accelerator.is_main_process:
        probe.write_text(name)  # (closed: visible to other machines' clients of a network file system)
    accelerator.wait_for_everyone()
    sees = probe.is_file()
    blind = int(accelerator.reduce(torch.tensor([0 if sees else 1], device=accelerator.device), "sum").item())
    if accelerator.is_main_process:
        probe.unlink(missing_ok=True)
    if blind:
        raise EarlyBirdError(
            f"--output-dir {rundir.path}: {blind} of {accelerator.num_processes} processes do not see the main "
            "process's files there; with several machines, --output-dir must be on a file system they all share "
            "(each process saves its RNG state into the checkpoints, and --resume reads them on every process)")


def _io_failure(prog: str, err: OSError, rundir, trainer) -> int:
    """A write failed mid-run (disk full, read-only, ...): say which file, what is intact, and how to go on."""
    where = err.filename or (rundir.path if rundir is not None else "the output directory")
    intact = []
    if rundir is not None:
        from ..records import load_records

        try:
            steps = load_records(rundir.records).steps
            intact.append(f"records to step {int(steps[-1])}" if len(steps) else "no records yet")
        except Exception:  # no records in this run
            pass
        latest = rundir.latest_checkpoint()
        intact.append(f"checkpoint {latest}" if latest is not None else "no checkpoint yet")
    at = f" at step {trainer.step}" if trainer is not None else ""
    print(f"{prog}: error: cannot write {where}: {err.strerror or err}. The run stopped{at}; what was written before "
          f"is intact ({', '.join(intact)}): free some space (or fix the directory) and continue with --resume",
          file=sys.stderr, flush=True)
    return 1


def run(prog: str, args, build_task) -> int:
    accelerator = None
    rundir = None
    trainer = None
    tracking = None
    opened = False
    preemption = None
    try:
        config = TrainConfig.from_args(args)
        cfg = config.run
        # From here a SIGTERM / SIGINT stops the run at a step boundary with a checkpoint (see earlybird.training.preempt)
        preemption = Preemption(prog, cfg.exit_code_on_preempt).install()
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        trackers = cfg.trackers
        accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=_cpu_processes(), log_with=trackers or None,
                                  project_dir=str(RunLayout(cfg.output_dir).tracking) if trackers else None,
                                  kwargs_handlers=[_process_group_kwargs(cfg.ddp_timeout_minutes)])
        is_main = accelerator.is_main_process
        _quiet_libraries(is_main)

        def log(message: str) -> None:
            if is_main:
                print(message, flush=True)

        if _single_cpu_launch():
            print(f"{prog}: note: `accelerate launch --cpu --num_processes N` starts one process with accelerate 1.15;"
                  " for N CPU processes run `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes N`"
                  " (see docs/training.md)", file=sys.stderr, flush=True)
        rundir = RunDir(cfg.output_dir, is_main_process=is_main)
        mode = rundir.check(resume=cfg.resume, overwrite=cfg.overwrite_output_dir)  # resume, start or overwrite
        if rundir.note:
            log(f"{prog}: {rundir.note}")
        resuming = mode == "resume"
        resume_from = rundir.latest_checkpoint() if resuming else None
        resume_state = None
        if resuming:  # the run's own flags, its global batch, and steps left to do
            check_same_flags(rundir, vars(args))
            if resume_from is not None:
                resume_state = read_checkpoint_state(resume_from)
                check_resumable(resume_state, cfg, accelerator.num_processes)
            finished = finished_results(rundir)
            if finished is not None:
                log(f"{prog}: {rundir.path} finished at step {finished.get('step')} ({rundir.results.name} exists): "
                    "nothing to resume; its files are left as they are")
                return 0
        # Every process must look at the directory before the main process writes to it (a failed check
        # fails on all processes alike, so no process is left waiting here).
        accelerator.wait_for_everyone()
        plan = resolve_plan(config.ticket, config.pruning) if config.ticket.enabled and resume_from is None else None

        set_seed(cfg.seed)
        task = build_task(args, accelerator)
        if resume_from is not None:
            model = task.model_class.from_pretrained(CheckpointLayout(resume_from).model)
            log(f"resuming from {resume_from}")
        elif plan is not None:
            source = weights_dir(config.ticket, plan)
            model = build_ticket(task.model_class, source, plan, where=config.ticket.where,
                                 slimming={k: v for k, v in config.slimming.model_flags.items() if v})
            log(f"ticket: {kept_sizes(model)} from {source}")
        else:
            model = task.build_model(config.slimming.model_flags)

        # The model is made from the shared seed (the same on every process); what is random in training (dropout)
        # draws from seed + process index, so the processes do not drop the same units. The data order does not
        # draw from these generators (a function of --seed and the epoch: loop.epoch_permutation).
        set_seed(cfg.seed, device_specific=True)

        # The last checks that need the data and the model, still before the run directory is touched.
        _, _, total_steps = step_budget(cfg, len(task.train_dataset), accelerator.num_processes)
        check_model_fits_data(task, model)
        ebtrain = None
        if config.eb.enabled:
            ebtrain = EBTrain(config.eb, config.pruning, total_steps, config.slimming.record_every,
                              accelerator.num_processes, group_size=head_group_size(model_shape(model)))
            ebtrain.check_budget()
            if ebtrain.scaling:
                log(f"EB-Train: --eb-scale: {ebtrain.scaling}")
        if resume_from is not None:  # the records the resume will append to
            if any((rundir.records / name).exists() for name in (*map(block_file, BLOCKS), STEPS_FILE)):
                from ..records import load_records

                load_records(rundir.records)

        opened = True
        rundir.open(overwrite=mode == "overwrite")
        if rundir.stale_lock:
            log(f"note: {rundir.stale_lock}")
        accelerator.wait_for_everyone()
        check_shared_output_dir(rundir, accelerator)
        if resume_from is not None:
            rundir.clean_temporaries()
        rundir.write_json(rundir.args, vars(args))
        if plan is not None:
            rundir.write_json(rundir.plan, plan)
        tracking = Tracking(accelerator, trackers)
        tracking.start(rundir, vars(args), resume_step=resume_state["step"] if resume_state else None)

        trainer = Trainer(config, accelerator, rundir, task, model, ebtrain=ebtrain, resume_from=resume_from,
                          source=getattr(args, "model_name_or_path", None), log=log, tracking=tracking)
        if resume_from is not None:
            rundir.truncate_metrics(trainer.step)
        log(f"{task.name}: {trainer.total_steps} steps, global batch {trainer.global_micro * cfg.gradient_accumulation_steps}"
            f" ({cfg.per_device_train_batch_size} per device x {accelerator.num_processes} processes x "
            f"{cfg.gradient_accumulation_steps} accumulation), model {kept_sizes(trainer.unwrapped)}")
        start = time.perf_counter()
        trainer.preemption = preemption
        trainer.fit()
        if trainer.stopped_by:
            return _preempted(prog, preemption, trainer, rundir, log)

        metrics = trainer.evaluate(task.final_split)
        trainer.save_weights(rundir.final)
        final_model = trainer.unwrapped
        results = {
            "kind": config.kind,
            "split": task.final_split, "step": trainer.step, **metrics,
            # SQuAD evaluates windows (features); the examples are what its metrics count
            "num_examples": task.info.get("eval_examples", len(task.eval_sets[task.final_split].dataset)),
            "model": model_shape(final_model),
            "kept": kept_sizes(final_model),
            "encoder_parameters": sum(p.numel() for p in encoder_layers(final_model).parameters()),
            "train_flops": trainer.flops["before_draw"] + trainer.flops["after_draw"],
            "train_wall_s": trainer.wall["before_draw"] + trainer.wall["after_draw"],
            **task.info,
        }
        if ebtrain is not None:
            summary = _ebtrain_summary(ebtrain, trainer)
            rundir.write_json(rundir.ebtrain, summary)
            log(f"EB-Train: draw step {summary['draw_step']}; training FLOPs {summary['flops']['total']:.3e} "
                f"({summary['flops']['before_draw']:.3e} before the draw, {summary['flops']['after_draw']:.3e} after); "
                f"wall {summary['wall_s']['before_draw']:.1f}s + {summary['wall_s']['after_draw']:.1f}s")
        trainer.log_line({"type": "final", **{k: v for k, v in results.items() if not isinstance(v, dict)}})
        rundir.write_json(rundir.results, results)  # last: a run with results.json has finished (--resume says so)
        log(f"{task.final_split}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float)))
        log(f"done in {time.perf_counter() - start:.1f}s: {rundir.path}")
        return 0
    except EarlyBirdError as err:
        return fail(prog, err, print_it=accelerator is None or accelerator.is_local_main_process
                    or getattr(err, "print_here", False))
    except OSError as err:
        if accelerator is not None and not accelerator.is_main_process:
            raise
        if not opened:  # before anything was written: a plain one-line error
            where = f"{err.filename}: " if err.filename else ""
            return fail(prog, f"{where}{err.strerror or err}")
        return _io_failure(prog, err, rundir, trainer)
    except SimulatedCrash as err:
        print(f"{prog}: {err}", file=sys.stderr, flush=True)
        return 3
    finally:
        if preemption is not None:
            preemption.restore()
        if tracking is not None:
            tracking.finish()
        if rundir is not None:
            rundir.close()
        _reset_accelerate(accelerator)


def _preempted(prog: str, preemption: Preemption, trainer: Trainer, rundir: RunDir, log) -> int:
    """A SIGTERM / SIGINT stopped the run with a checkpoint (records flushed with it): one line, the exit status."""
    import signal

    code = preemption.exit_code(trainer.stopped_by)
    log(f"{prog}: stopped by {signal.Signals(trainer.stopped_by).name} at step {trainer.step} of {trainer.total_steps}: "
        f"checkpoint {rundir.checkpoint(trainer.step)} saved; the same command with --resume (or --resume auto) "
        f"continues it (exit status {code})")
    return code


def _ebtrain_summary(ebtrain: EBTrain, trainer: Trainer) -> dict:
    flops, wall = trainer.flops, trainer.wall
    draw = trainer.draw_state or {}
    summary = ebtrain.summary()
    dense = None
    if ebtrain.draw_step:
        # What the whole budget would have cost unpruned, at the pre-draw rate per step.
        dense = flops["before_draw"] / ebtrain.draw_step * trainer.total_steps
    summary.update({
        "drawn": ebtrain.drawn,
        "total_steps": trainer.total_steps,
        "flops": {"before_draw": flops["before_draw"], "after_draw": flops["after_draw"],
                  "total": flops["before_draw"] + flops["after_draw"], "dense_equivalent": dense},
        "wall_s": dict(wall),
        "shape_before": draw.get("shape_before"),
        "shape_after": draw.get("shape_after"),
        "plan": trainer.run.plan.name if ebtrain.drawn else None,
        "flops_note": "training FLOPs of the encoder layers: 3 x forward, from the shapes (encoder_flops_per_token)",
    })
    return summary
