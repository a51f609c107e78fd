"""The one training loop, on accelerate, used by every entry point (slim, ticket, EB-Train).

One optimizer step = `--gradient-accumulation-steps` micro-batches of `--per-device-train-batch-size`
examples on each of the N processes, so the global batch is per-device x N x accumulation. Steps are
counted from 1: "step S" is the state after S optimizer updates, step 0 the initial weights (init/).

Data order is a pure function of (seed, epoch): each epoch is a seeded permutation cut into global
micro-batches, and process r takes the r-th slice of each (the last incomplete global batch is
dropped). Augmentations are seeded per (seed, epoch, example) by the datasets. Together with the saved
RNG states this makes a resumed run repeat an uninterrupted one exactly (on CPU).

Per step the loop does the forward/backward, the optimizer step, and -- on the device, without a host
sync -- records the coefficients. Host syncs happen only to log (every --logging-steps), to evaluate,
to checkpoint, to flush the records, and at the EB detector's draw: a detector check copies its coefficients
to the host asynchronously and is decided once the next step is queued (EBTrain.decide; see fit()).

Checkpoints by wall time (--checkpoint-minutes, on by default) are decided at the logging steps: the main
process reads its clock and its decision travels in the all-reduce of the loss that happens there anyway, so
every process saves at the same step without a collective of its own (a clock read on each process could
disagree, and a process that saves alone would deadlock the others).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from collections import defaultdict
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .. import faults
from ..blocks import BLOCKS
from ..data.common import EpochIndices, default_num_workers
from ..errors import EarlyBirdError
from ..records import CoefficientRecorder, load_records
from ..layout import CheckpointLayout
from ..masks import head_group_size
from ..slimming import (apply_plan, encoder_flops_per_token, fold_slimming, kept_sizes, l1_penalty, model_shape,
                        read_coefficients)
from .config import RunConfig, TrainConfig
from .preempt import StopAgreement
from .rundir import RunDir, write_failure
from .trackers import CoefficientSummaries, Tracking

# The clock of checkpoints by minutes (a module attribute, so that a test can make time pass).
wall_clock = time.monotonic


class SimulatedCrash(RuntimeError):
    """Raised by the test-only --debug-crash-at-step: the run stops as a kill would (nothing flushed)."""


def step_budget(run: RunConfig, n_train: int, world: int) -> tuple[int, int, int]:
    """(global micro-batch, micro-batches per epoch, optimizer steps in total) of a run.

    EarlyBirdError when the training set cannot fill one global batch (an empty data set included):
    the runner calls this before the run directory is touched.
    """
    global_micro = run.per_device_train_batch_size * world
    batches_per_epoch = n_train // global_micro
    if batches_per_epoch == 0:
        what = "is empty" if n_train == 0 else f"has {n_train} examples, fewer than one global batch"
        raise EarlyBirdError(
            f"the training set {what} ({global_micro} = {run.per_device_train_batch_size} per device x {world} "
            "processes); expected at least one global batch")
    total = run.max_steps or max(1, math.ceil(run.num_train_epochs * batches_per_epoch / run.gradient_accumulation_steps))
    return global_micro, batches_per_epoch, total


def read_checkpoint_state(checkpoint: Path) -> dict:
    """state.json of a checkpoint (EarlyBirdError naming it when unreadable)."""
    path = CheckpointLayout(checkpoint).state
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise EarlyBirdError(f"--resume: {path} is not readable ({err}); expected a complete checkpoint") from None


def global_batch(run: RunConfig, world: int) -> list:
    """[per-device batch, processes, accumulation]: a checkpoint's data order is a function of it."""
    return [run.per_device_train_batch_size, world, run.gradient_accumulation_steps]


def check_resumable(state: dict, run: RunConfig, world: int) -> None:
    """A resume must keep the global batch: the data order is a function of it."""
    saved = state.get("global_batch")
    now = global_batch(run, world)
    if saved != now:
        raise EarlyBirdError(
            f"--resume: the checkpoint was made with per-device batch x processes x accumulation = {saved}, "
            f"this run has {now}; the data order would differ")


# --------------------------------------------------------------------------- optimizer and schedule


def make_optimizer(model, run: RunConfig) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases, norms and slimming coefficients (decay would fight the L1)."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if param.ndim < 2 or "norm" in name.lower() or "slimming_coef" in name:
            no_decay.append(param)
        else:
            decay.append(param)
    groups = [{"params": decay, "weight_decay": run.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=run.learning_rate)


def make_scheduler(optimizer, kind: str, warmup: int, total: int):
    """Linear warm-up, then linear or cosine decay to 0 (or constant) over `total` steps.

    Stepped by the loop itself once per optimizer step (accelerate's prepared scheduler would step
    once per process per step).
    """
    from transformers import get_scheduler

    name = {"linear": "linear", "cosine": "cosine", "constant": "constant_with_warmup"}[kind]
    return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=max(total, 1))


# --------------------------------------------------------------------------- data order


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(n)


def rank_batches(perm: np.ndarray, start: int, batches: int, per_device: int, world: int, rank: int):
    """This process's slice of global micro-batches start..batches-1 of an epoch's permutation."""
    global_batch = per_device * world
    for b in range(start, batches):
        chunk = perm[b * global_batch:(b + 1) * global_batch]
        yield chunk[rank * per_device:(rank + 1) * per_device].tolist()


def rank_eval_batches(n: int, per_device: int, world: int, rank: int):
    """Eval order: consecutive global batches, padded at the end by repeating the last example.

    Gathering a step's outputs concatenates the processes' slices in rank order, which restores
    dataset order; the padding is cut off after the gather.
    """
    global_batch = per_device * world
    padded = math.ceil(n / global_batch) * global_batch
    for start in range(0, padded, global_batch):
        first = start + rank * per_device
        yield [min(i, n - 1) for i in range(first, first + per_device)]


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> str | None:
    """Restore a process's RNG states; a note (one line) when the checkpoint holds more CUDA generators than this
    machine shows (resumed with fewer visible GPUs): those that match are restored, the others have no device."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        saved, visible = state["cuda"], torch.cuda.device_count()
        torch.cuda.set_rng_state_all(saved[:visible])
        if len(saved) > visible:
            return (f"the checkpoint holds the CUDA RNG states of {len(saved)} devices, this process sees {visible}: "
                    f"restored those of devices 0-{visible - 1}")
    return None


def _generator_states(device) -> tuple:
    """torch's generators that a step draws from (dropout): the CPU's, and the step's GPU's. No device sync."""
    return torch.get_rng_state(), torch.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_generator_states(states: tuple, device) -> None:
    torch.set_rng_state(states[0])
    if states[1] is not None:
        torch.cuda.set_rng_state(states[1], device)


def load_to_cpu(path: Path, weights_only: bool = True):
    """A checkpoint file's tensors on the CPU, wherever they were saved (cuda:0 on a GPU run): every process would
    otherwise materialise the saving process's GPU copy (AdamW's state, twice the model) on that GPU, and a GPU
    checkpoint would not load on a machine without it. The optimizer moves its state to its parameters' device."""
    return torch.load(path, map_location="cpu", weights_only=weights_only)


# --------------------------------------------------------------------------- the trainer


class Trainer:
    def __init__(self, config: TrainConfig, accelerator, run: RunDir, task, model, *, ebtrain=None,
                 resume_from: Path | None = None, record: bool = True, source: str | None = None, log=print,
                 tracking: Tracking | None = None):
        self.config = config
        self.cfg = cfg = config.run
        self.slimming = config.slimming
        self.accelerator = accelerator
        self.run = run
        self.task = task
        self.ebtrain = ebtrain
        self.log = log
        self.tracking = tracking if tracking is not None else Tracking(accelerator, ())
        self.logs_l1 = any(self.slimming.l1(block) for block in BLOCKS)  # train lines carry the L1 term
        self.world = accelerator.num_processes
        self.rank = accelerator.process_index
        self.is_main = accelerator.is_main_process

        self.global_micro, self.batches_per_epoch, self.total_steps = step_budget(cfg, len(task.train_dataset),
                                                                                 self.world)

        self.step = 0
        self.micro = 0  # micro-batches consumed (global count, the same on every process)
        self.flops = {"before_draw": 0.0, "after_draw": 0.0}
        self.wall = {"before_draw": 0.0, "after_draw": 0.0}
        self.schedule = {"start": 0, "warmup": round(cfg.warmup_ratio * self.total_steps), "total": self.total_steps}
        self.draw_state: dict | None = None
        self._resume_running = [0.0, 0]
        self._resume_penalty = 0.0

        state = None
        if resume_from is not None:
            state = read_checkpoint_state(resume_from)
            self._check_resumable(state)
            self.step, self.micro = state["step"], state["micro"]
            self.flops, self.wall, self.schedule = state["flops"], state["wall"], state["schedule"]
            self.draw_state = state.get("draw")

        self.model = model
        self.optimizer = make_optimizer(model, cfg)
        self.scheduler = make_scheduler(self.optimizer, cfg.lr_scheduler, self.schedule["warmup"], self.schedule["total"])
        if resume_from is not None:
            saved = CheckpointLayout(resume_from)
            self.optimizer.load_state_dict(load_to_cpu(saved.optimizer))
            self.scheduler.load_state_dict(load_to_cpu(saved.scheduler))
        self.model, self.optimizer = accelerator.prepare(self.model, self.optimizer)
        if resume_from is not None and accelerator.scaler is not None and CheckpointLayout(resume_from).scaler.exists():
            accelerator.scaler.load_state_dict(load_to_cpu(CheckpointLayout(resume_from).scaler))

        self.recorder = None
        if record and any(c is not None for c in self._coefficients()):
            summaries = None
            if self.tracking.active:
                group_size = head_group_size(model_shape(self.unwrapped))
                summaries = CoefficientSummaries(self.tracking.log, {b: config.mask_settings(b) for b in BLOCKS},
                                                 {"msa": {"group_size": group_size,
                                                          "gqa_rule": config.pruning.gqa_rule}})
                if resume_from is not None and run.records.is_dir():
                    summaries.replay(load_records(run.records), self.step)
            self.recorder = CoefficientRecorder(
                run.records, every=self.slimming.record_every, chunk=self.slimming.record_chunk, is_main_process=self.is_main,
                resume=resume_from is not None, listener=summaries,
                meta={"model_type": self.unwrapped.config.model_type, "flags": self._slimming_flags(),
                      "model": model_shape(self.unwrapped), "task": task.name, "seed": cfg.seed,
                      "model_name_or_path": source})
        if ebtrain is not None and resume_from is not None:
            if self.draw_state is not None:
                ebtrain.restore(self.draw_state)
            else:
                ebtrain.replay(load_records(run.records), self.step)
        self._flops_cache: dict[int, int] = {}
        self._resume_rng = None
        if resume_from is not None:
            # (Python's and numpy's RNG states are not plain tensors: this run's own file, not weights_only)
            own = load_to_cpu(CheckpointLayout(resume_from).rng(self.rank), weights_only=False)
            self._resume_rng, self._resume_running = own["rng"], own["running_loss"]
            self._resume_penalty = own.get("running_penalty", 0.0)

    # -- helpers --------------------------------------------------------------------------

    @property
    def unwrapped(self):
        # Cached: unwrapping every step (for the penalty and the coefficients) is needless work.
        if getattr(self, "_unwrapped_for", None) is not self.model:
            self._unwrapped = self.accelerator.unwrap_model(self.model)
            self._unwrapped_for = self.model
        return self._unwrapped

    def _coefficients(self):
        try:
            return read_coefficients(self.unwrapped)
        except EarlyBirdError:
            # A ticket pruned with a global scope has layers of different sizes: nothing to stack/record.
            self.log("note: the coefficients differ in size across layers; they are not recorded")
            return None, None

    def _slimming_flags(self) -> dict:
        config = self.unwrapped.config
        return {k: bool(getattr(config, k, False)) for k in ("self_slimming", "inter_slimming", "slim_before", "soft_by_one")}

    def _check_resumable(self, state: dict) -> None:
        check_resumable(state, self.cfg, self.world)

    def _step_flops(self, batch: dict) -> float:
        """Training FLOPs of one micro-batch on all processes: 3 x forward (forward + backward), from shapes."""
        seq_len = int(self.task.tokens_per_example(batch))
        per_token = self._flops_cache.get(seq_len)
        if per_token is None:
            per_token = self._flops_cache[seq_len] = encoder_flops_per_token(self.unwrapped, seq_len)
        return 3.0 * per_token * seq_len * self.global_micro

    def _micro_batches(self):
        """Endless micro-batches for this process, from micro-batch `self.micro` on (epochs roll over).

        One DataLoader for the rest of the run, so its worker processes (if any) are started once, not each epoch;
        each batch of indices carries its epoch (EpochIndices) for the dataset's augmentations.
        """
        cfg = self.cfg
        n = len(self.task.train_dataset)

        def batch_indices():
            micro = self.micro
            while True:
                epoch, offset = divmod(micro, self.batches_per_epoch)
                perm = epoch_permutation(n, cfg.seed, epoch)
                for indices in rank_batches(perm, offset, self.batches_per_epoch, cfg.per_device_train_batch_size,
                                            self.world, self.rank):
                    yield EpochIndices(indices, epoch)
                micro = (epoch + 1) * self.batches_per_epoch

        # Its own generator: creating the iterator must not draw from the global RNG (resume exactness).
        yield from DataLoader(self.task.train_dataset, batch_sampler=batch_indices(), collate_fn=self.task.collate_fn,
                              num_workers=self._num_workers(self.task.train_dataset),
                              pin_memory=torch.cuda.is_available(), generator=torch.Generator().manual_seed(cfg.seed))

    def _num_workers(self, dataset) -> int:
        requested = self.cfg.dataloader_num_workers
        return default_num_workers(dataset) if requested is None else requested

    def _on_device(self, batch: dict) -> dict:
        """A host batch moved to this process's device and made the model's input there (`Task.prepare_batch`)."""
        batch = to_device(batch, self.accelerator.device)
        prepare = self.task.prepare_batch
        return batch if prepare is None else prepare(batch, self.unwrapped.dtype)

    def _loss(self, batch):
        if self.task.compute_loss is not None:
            return self.task.compute_loss(self.model, batch)
        return self.model(**batch).loss

    # -- evaluation -----------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, split: str) -> dict:
        """Metrics of `split` (main process; the others return {}), computed on all processes' shards."""
        eval_set = self.task.eval_sets[split]
        n = len(eval_set.dataset)
        if n == 0:
            raise EarlyBirdError(f"the {split} split is empty")
        was_training = self.model.training
        self.model.eval()
        loader = DataLoader(eval_set.dataset, collate_fn=eval_set.collate_fn,
                            batch_sampler=list(rank_eval_batches(n, self.cfg.per_device_eval_batch_size,
                                                                 self.world, self.rank)),
                            num_workers=self._num_workers(eval_set.dataset))
        gathered = defaultdict(list)
        for batch in loader:
            batch = self._on_device(batch)
            out = self.model(**batch)
            for key, value in eval_set.outputs(out, batch).items():
                gathered[key].append(self.accelerator.gather(value.contiguous()).cpu())
        self.model.train(was_training)
        if not self.is_main:
            return {}
        arrays = {k: torch.cat(v)[:n].numpy() for k, v in gathered.items()}
        metrics = eval_set.compute(arrays)
        return {k: float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v for k, v in metrics.items()}

    # -- checkpoints and snapshots --------------------------------------------------------

    def _state(self) -> dict:
        return {"step": self.step, "micro": self.micro, "total_steps": self.total_steps, "flops": self.flops,
                "wall": self.wall, "schedule": self.schedule, "draw": self.draw_state,
                "global_batch": global_batch(self.cfg, self.world)}

    def save_checkpoint(self) -> None:
        """Atomic: everything goes to checkpoints/.tmp-step-S, is fsynced, and is renamed to step-S when complete.

        A write that fails (disk full...) removes the temporary directory and raises OSError naming it; the
        previous checkpoints are untouched.
        """
        acc = self.accelerator
        if self.recorder is not None:
            self.recorder.flush()  # the records cover the checkpoint, so a resume leaves no gap
        tmp = self.run.checkpoint_tmp(self.step)
        files = CheckpointLayout(tmp)
        try:
            if self.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir(parents=True)
            acc.wait_for_everyone()
            # Per process: its RNG state and its share of the loss since the last log line.
            torch.save({"rng": _rng_state(), "running_loss": [float(self._running_loss.item()), self._running_count],
                        "running_penalty": float(self._running_penalty.item())}, files.rng(self.rank))
            if self.is_main:
                self.unwrapped.save_pretrained(files.model)
                faults.hit("checkpoint-save", files.optimizer)
                torch.save(self.optimizer.state_dict(), files.optimizer)
                torch.save(self.scheduler.state_dict(), files.scheduler)
                if acc.scaler is not None:
                    torch.save(acc.scaler.state_dict(), files.scaler)
                files.state.write_text(json.dumps(self._state(), indent=2))
            acc.wait_for_everyone()
        except Exception as err:  # torch.save / safetensors report a full disk as RuntimeError & co
            failure = write_failure(err, tmp)  # (measures the free space before the clean-up below)
            if self.is_main:
                shutil.rmtree(tmp, ignore_errors=True)  # frees the space; nothing refers to it
            raise failure from None
        if self.is_main:
            self.run.commit_checkpoint(self.step, self.cfg.keep_checkpoints)
        acc.wait_for_everyone()
        self._last_checkpoint = wall_clock()

    def save_weights(self, path: Path) -> None:
        """save_pretrained of the unwrapped model, atomically (temporary directory, then rename)."""
        if self.is_main:
            tmp = path.with_name(f".tmp-{path.name}")
            shutil.rmtree(tmp, ignore_errors=True)
            try:
                self.unwrapped.save_pretrained(tmp)
                if self.task.save_extras is not None:
                    self.task.save_extras(tmp)
            except Exception as err:
                failure = write_failure(err, tmp)
                shutil.rmtree(tmp, ignore_errors=True)
                raise failure from None
            if path.exists():
                shutil.rmtree(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.rename(path)
        self.accelerator.wait_for_everyone()

    # -- EB-Train ------------------------------------------------------------------------------

    def _prune_in_place(self) -> dict:
        """Prune the live model as the draw says, fold, and rebuild optimizer and schedule for what is left."""
        acc = self.accelerator
        model = acc.unwrap_model(self.model, keep_fp32_wrapper=False)
        shape = model_shape(model)
        before = kept_sizes(model)
        plan = self.ebtrain.plan(shape, meta={"model": shape, "task": self.task.name})
        apply_plan(model, plan)
        fold_slimming(model)
        if self.recorder is not None:  # the coefficients are folded away: the records end at the draw
            self.recorder.close()
            self.recorder = None
        # Drop accelerate's references to the old model/optimizer, then prepare the pruned model afresh
        # (under DDP this builds a new wrapper around the smaller parameters on every process).
        del self.model, self.optimizer
        acc.free_memory()
        remaining = self.total_steps - self.step
        self.schedule = {"start": self.step, "warmup": round(self.cfg.warmup_ratio * remaining), "total": remaining}
        optimizer = make_optimizer(model, self.cfg)
        self.scheduler = make_scheduler(optimizer, self.cfg.lr_scheduler, self.schedule["warmup"], remaining)
        self.model, self.optimizer = acc.prepare(model, optimizer)
        self._flops_cache.clear()
        self.run.write_json(self.run.plan, plan)
        self.draw_state = {"step": self.step, "shape_before": before, "shape_after": kept_sizes(model),
                           "detectors": self.ebtrain.results()}  # the trace is part of the result: checkpointed
        return plan

    # -- the loop --------------------------------------------------------------------------

    def fit(self) -> None:
        cfg, slimming, acc = self.cfg, self.slimming, self.accelerator
        from tqdm.auto import tqdm

        if self.step == 0 and self.recorder is not None:
            self.save_weights(self.run.init)  # step-0 weights: what `--rewind init` starts tickets from
        if self.cfg.snapshot_due(0):
            self.save_weights(self.run.snapshot(0))
        if self._resume_rng is not None:
            note = _set_rng_state(self._resume_rng)  # last, after everything that may draw random numbers
            if note and self.accelerator.is_local_main_process:  # (once per machine: a machine's GPUs are counted)
                print(f"warning: --resume: {note}", file=sys.stderr, flush=True)
        progress = tqdm(total=self.total_steps, initial=self.step, disable=not self.is_main or cfg.disable_tqdm,
                        desc=self.task.name, dynamic_ncols=True)
        batches = self._micro_batches()
        # The loss since the last log line, summed on the device (read only when logging). A checkpoint
        # carries it, so a resumed run logs the same numbers as an uninterrupted one.
        self._running_loss = torch.full((), float(self._resume_running[0]), device=acc.device)
        self._running_count = self._resume_running[1]
        self._running_penalty = torch.full((), float(self._resume_penalty), device=acc.device)
        self._last_checkpoint = wall_clock()
        phase = "after_draw" if self.draw_state else "before_draw"
        step_fault = faults.armed("step")  # test-only (earlybird.faults); read once, not per step
        self._stop = StopAgreement(acc)
        tic = time.perf_counter()
        self.model.train()
        while self.step < self.total_steps:
            # A detector check of the last step whose coefficients are still on their way to the host is decided
            # once this step's forward and backward are queued (the device stays busy meanwhile); if it drew, the
            # last step is pruned as if decided then, and this step is redone on the pruned model from the same
            # batches and random state: the run is the one a decision at the check's own step would have made.
            undo = _generator_states(acc.device) if self.ebtrain is not None and self.ebtrain.pending else None
            done = self._forward_backward(batches, keep=undo is not None)
            if undo is not None and self.ebtrain.decide():
                self.optimizer.zero_grad(set_to_none=True)
                _set_generator_states(undo, acc.device)  # (before the prune, which may draw from them too)
                phase, tic = self._draw(phase, tic)
                done = self._forward_backward(iter(done["batches"]), keep=False)
            self._add_up(done, phase)
            if cfg.max_grad_norm:
                acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            if not acc.optimizer_step_was_skipped:  # fp16 overflow: the schedule does not advance either
                self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            progress.update(1)
            if step_fault:
                faults.hit("step")

            # Coefficients: recorded and watched on the device (the recorder buffers, the detector chunks).
            if self.recorder is not None or (self.ebtrain is not None and not self.ebtrain.drawn):
                if self.step % slimming.record_every == 0:
                    msa, mlp = read_coefficients(self.unwrapped)
                    if self.recorder is not None and self.step > self.recorder.last_step:
                        self.recorder.record(self.step, msa, mlp)
                    if self.ebtrain is not None:
                        self.ebtrain.observe(self.step, msa, mlp, defer=True)
            if self.ebtrain is not None and self.ebtrain.pending and self._reads_back_anyway():
                if self.ebtrain.decide():  # (the step reads from the device anyway: decided at once)
                    phase, tic = self._draw(phase, tic)

            minutes_due = False
            if self.step % cfg.logging_steps == 0 or self.step == self.total_steps:
                entry, minutes_due = self._train_line(tic)
                self.log_line(entry)
                progress.set_postfix(loss=f"{entry['loss']:.4f}", refresh=False)
            if cfg.eval_every and self.step % cfg.eval_every == 0 and self.step != self.total_steps:
                # The evaluation's DataLoader draws its seed from torch's RNG: forked, so that evaluating leaves the
                # training's randomness (dropout) as it was -- a run is the same run whatever --eval-every is.
                with torch.random.fork_rng(devices=[]):
                    metrics = self.evaluate("validation")
                self.log_line({"type": "eval", "split": "validation", "step": self.step,
                               "elapsed": self._elapsed(tic), **metrics})
            if self.cfg.snapshot_due(self.step):
                self.save_weights(self.run.snapshot(self.step))
            if cfg.checkpoint_due(self.step) or minutes_due:
                now = time.perf_counter()
                self.wall[phase] += now - tic
                tic = now
                self.save_checkpoint()
            if cfg.debug_crash_at_step is not None and self.step == cfg.debug_crash_at_step:
                progress.close()
                raise SimulatedCrash(f"stopped at step {self.step} (--debug-crash-at-step)")
            if self._stop_agreed():  # SIGTERM / SIGINT on any process: a checkpoint at this step, then stop
                if self.ebtrain is not None and self.ebtrain.pending and self.ebtrain.decide():
                    phase, tic = self._draw(phase, tic)  # a check in flight is decided before the checkpoint
                if not (cfg.checkpoint_due(self.step) or minutes_due):
                    now = time.perf_counter()
                    self.wall[phase] += now - tic
                    tic = now
                    self.save_checkpoint()
                break
        self.wall[phase] += time.perf_counter() - tic
        progress.close()
        if self.recorder is not None:
            self.recorder.close()

    def _forward_backward(self, batches, keep: bool) -> dict:
        """Forward and backward of one optimizer step's micro-batches, nothing read back from the device: their
        losses, L1 terms and FLOPs (added to the run's by `_add_up`), and the host batches themselves if `keep`."""
        acc, accum, slimming = self.accelerator, self.cfg.gradient_accumulation_steps, self.slimming
        done = {"batches": [], "losses": [], "penalties": [], "flops": []}
        for i in range(accum):
            host = next(batches)
            batch = self._on_device(host)
            if keep:  # the host batch: a redo moves and prepares it again
                done["batches"].append(host)
            done["flops"].append(self._step_flops(batch))
            sync = nullcontext() if i == accum - 1 else acc.no_sync(self.model)
            with sync:
                loss = self._loss(batch)
                penalty = l1_penalty(self.unwrapped, slimming.l1_self, slimming.l1_inter)
                acc.backward((loss + penalty) / accum)
            done["losses"].append(loss.detach().float())
            if isinstance(penalty, torch.Tensor):
                done["penalties"].append(penalty.detach())
        return done

    def _add_up(self, done: dict, phase: str) -> None:
        for flops, loss in zip(done["flops"], done["losses"]):
            self.flops[phase] += flops
            self._running_loss += loss
            self._running_count += 1
            self.micro += 1
        for penalty in done["penalties"]:
            self._running_penalty += penalty

    def _reads_back_anyway(self) -> bool:
        """This step reads from the device anyway (a log line, an evaluation, a snapshot, a checkpoint by steps, the
        last step): a detector check still in flight is decided here, before them, at its own step."""
        cfg, step = self.cfg, self.step
        return (step % cfg.logging_steps == 0 or step == self.total_steps or cfg.snapshot_due(step)
                or cfg.checkpoint_due(step) or bool(cfg.eval_every and step % cfg.eval_every == 0))

    def _draw(self, phase: str, tic: float) -> tuple[str, float]:
        """The early bird was drawn at this step: prune in place, log it; the phase and clock that follow."""
        now = time.perf_counter()
        self.wall[phase] += now - tic
        plan = self._prune_in_place()
        self.log_line({"type": "draw", "step": self.step, "shape": self.draw_state["shape_after"],
                       "pruned_heads": sum(len(v) for v in plan["pruned_heads"].values()),
                       "pruned_neurons": sum(len(v) for v in plan["pruned_intermediate"].values())})
        self.log(f"EB-Train: early bird drawn at step {self.step}; pruned in place to {self.draw_state['shape_after']}")
        return "after_draw", now

    # Set by the runner: the SIGTERM / SIGINT handler of this run (earlybird.training.preempt); None: no handler.
    preemption = None
    stopped_by: int | None = None  # the signal that stopped the run (the same on every process), None if it ran out

    def _stop_agreed(self) -> bool:
        """Whether every process stops after this step: one integer all-reduced per step, read a step later (see
        earlybird.training.preempt.StopAgreement); no host sync with one process."""
        local = (self.preemption.signum or 0) if self.preemption is not None else 0
        signum = self._stop.step(local)
        if signum:
            self.stopped_by = signum
        return bool(signum)

    def _elapsed(self, tic: float) -> float:
        done = self.wall["before_draw"] + self.wall["after_draw"]
        return done + time.perf_counter() - tic

    def _train_line(self, tic: float) -> tuple[dict, bool]:
        """The train line since the last one, and whether a checkpoint by minutes is due now.

        One all-reduce sums the processes' loss (and L1 term) sums and the main process's clock decision, so every
        process gets the same decision at the same step.
        """
        acc, cfg = self.accelerator, self.cfg
        due = (self.is_main and cfg.checkpoint_seconds > 0 and self.step != self.total_steps
               and wall_clock() - self._last_checkpoint >= cfg.checkpoint_seconds)
        sums = torch.stack([self._running_loss, self._running_penalty, torch.tensor(float(due), device=acc.device)])
        loss, penalty, due = acc.reduce(sums, "sum").tolist()
        count = max(self._running_count, 1) * self.world
        entry = {"type": "train", "step": self.step, "loss": loss / count,
                 "learning_rate": self.scheduler.get_last_lr()[0],
                 "epoch": self.micro / self.batches_per_epoch, "elapsed": self._elapsed(tic)}
        if self.logs_l1:
            entry["l1_penalty"] = penalty / count
        self._running_loss.zero_()
        self._running_penalty.zero_()
        self._running_count = 0
        return entry, due > 0

    def log_line(self, entry: dict) -> None:
        """A line of metrics.jsonl, and the same numbers to the trackers."""
        self.run.append_metrics(entry)
        self.tracking.log_line(entry)
