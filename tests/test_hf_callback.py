"""EarlyBirdCallback in a real transformers Trainer: tiny BERT (sequence classification) and ViT (image
classification), on the CPU, a few dozen steps each.

The equivalences: the records are the coefficients after each optimizer step (read by a second callback); the L1
term is the project's own penalty-in-the-loss (`earlybird.slimming.l1_penalty`, in a Trainer subclass) step for step
under plain SGD, with gradient accumulation too; an fp16 GradScaler does not shrink it; gradient accumulation gives
the records of one big batch; the callback's draw is `earlybird.detectors.detect` on its records; the saved ticket is
the model at the draw with the pruned coefficients zeroed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import (AutoImageProcessor, AutoModelForImageClassification, AutoModelForSequenceClassification, AutoTokenizer,
                          BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments,
                          ViTForImageClassification)

from earlybird.detectors import detect
from earlybird.errors import EarlyBirdError
from earlybird.hf import EarlyBirdCallback
from earlybird.plans import load_plan, make_plan
from earlybird.records import load_records
from earlybird.slimming import head_coefficients, kept_sizes, l1_penalty, neuron_coefficients, read_coefficients
from test_training_support import make_tiny_bert, make_tiny_vit, one_thread

pytestmark = pytest.mark.usefixtures("one_thread_only")

SLIM = dict(self_slimming=True, inter_slimming=True)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


# --------------------------------------------------------------------------- tiny models, data, trainers


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return make_tiny_bert(tmp_path_factory.mktemp("bert"))


@pytest.fixture(scope="module")
def vit_dir(tmp_path_factory):
    return make_tiny_vit(tmp_path_factory.mktemp("vit"), image_size=8)


class Tokens(torch.utils.data.Dataset):
    """Fixed-length token sequences (no padding: micro-batches and big batches see the same tensors); the label is
    whether token 7 occurs, so there is something to learn."""

    def __init__(self, n=64, length=10, vocab=40):
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(5, vocab, (n, length), generator=generator)
        self.labels = (self.ids == 7).any(dim=1).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


class Images(torch.utils.data.Dataset):
    """8x8 images whose class is the brightest colour channel."""

    def __init__(self, n=48, size=8):
        generator = torch.Generator().manual_seed(0)
        self.labels = torch.arange(n) % 3
        self.pixels = torch.rand(n, 3, size, size, generator=generator) - 0.5
        self.pixels[torch.arange(n), self.labels] += 1.0

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return {"pixel_values": self.pixels[i], "labels": self.labels[i]}


def bert(bert_dir, **flags):
    torch.manual_seed(0)  # the classification head is new: the same one in every run
    return BertForSequenceClassification.from_pretrained(bert_dir, num_labels=2, **{**SLIM, **NO_DROPOUT, **flags})


def vit(vit_dir, **flags):
    torch.manual_seed(0)
    return ViTForImageClassification.from_pretrained(vit_dir, num_labels=3, **{**SLIM, **NO_DROPOUT, **flags})


def arguments(output_dir, **overrides):
    values = dict(max_steps=24, per_device_train_batch_size=8, learning_rate=0.05, lr_scheduler_type="constant",
                  use_cpu=True, report_to="none", disable_tqdm=True, save_strategy="no", logging_steps=4, seed=0,
                  data_seed=0, optim="sgd", weight_decay=0.0, max_grad_norm=0.0)
    return TrainingArguments(str(output_dir), **{**values, **overrides})


def trainer(model, output_dir, callbacks=(), dataset=None, trainer_class=Trainer, processing_class=None, **overrides):
    made = trainer_class(model=model, args=arguments(output_dir, **overrides), callbacks=list(callbacks),
                         train_dataset=dataset if dataset is not None else Tokens(), processing_class=processing_class)
    # BERT's classification loss is a mean that ignores num_items_in_batch; with this the Trainer divides it by
    # the accumulation steps, so an accumulated step has the gradient of one big batch (its own docstring).
    made.loss_is_scaled_for_ga = False
    return made


class Coefficients(TrainerCallback):
    """Reads the coefficients right after each optimizer step (before the next callback event)."""

    def __init__(self):
        self.steps, self.msa, self.mlp = [], [], []

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        msa, mlp = read_coefficients(model)
        self.steps.append(state.global_step + 1)  # the step this update completes
        self.msa.append(msa.clone().numpy())
        self.mlp.append(mlp.clone().numpy())


class Logs(TrainerCallback):
    """What the callbacks after ours (the progress bar, the printer, integrations listed after it) are given."""

    def __init__(self):
        self.seen = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.seen.append(dict(logs))


class PenaltyInTheLoss(Trainer):
    """The project's own loop semantics: `loss + l1_penalty(model)` per micro-batch (the Trainer then divides by the
    accumulation steps), so the penalty's gradient flows through autograd."""

    strengths = (0.0, 0.0)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        return loss + l1_penalty(model, *self.strengths)


def penalty_trainer(model, output_dir, strengths, callbacks=(), **overrides):
    made = trainer(model, output_dir, callbacks, trainer_class=PenaltyInTheLoss, **overrides)
    made.strengths = strengths
    return made


# --------------------------------------------------------------------------- records


def test_records_are_the_coefficients_after_each_optimizer_step(bert_dir, tmp_path):
    seen = Coefficients()
    callback = EarlyBirdCallback(l1_self=1e-2, l1_inter=1e-2)
    trainer(bert(bert_dir), tmp_path, [callback, seen], optim="adamw_torch", learning_rate=1e-2).train()

    records = load_records(tmp_path / "records")
    assert records.steps.tolist() == seen.steps == list(range(1, 25))
    np.testing.assert_array_equal(records.msa, np.stack(seen.msa))
    np.testing.assert_array_equal(records.mlp, np.stack(seen.mlp))
    assert records.msa.shape == (24, 2, 4) and records.mlp.shape == (24, 2, 37)
    assert records.meta["model_type"] == "bert" and records.meta["flags"]["self_slimming"]
    assert np.abs(records.msa[-1] - 1).max() > 1e-3  # they moved

    # Every earlybird command reads them: `earlybird detect` on the run directory, as on our own runs'.
    out = subprocess.run([sys.executable, "-m", "earlybird.cli", "detect", str(tmp_path), "--method", "hamming",
                          "--ratio", "0.3", "--json"], capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["total_steps"] == 24


# --------------------------------------------------------------------------- the L1 term


@pytest.fixture(scope="module")
def penalty_runs(bert_dir, tmp_path_factory):
    """The callback's L1 term and the penalty in the loss, same data and SGD without clipping, accumulating 2
    micro-batches per step; and the task alone."""
    strengths = (0.02, 0.01)
    runs = {}
    with one_thread():  # (module-scoped: before the tests' own one-thread fixture)
        for name in ("callback", "in_loss", "none"):
            runs[name] = _penalty_run(bert_dir, tmp_path_factory.mktemp(name), name, strengths)
    return strengths, runs


def _penalty_run(bert_dir, output_dir, name, strengths):
    seen, logs = Coefficients(), Logs()
    callbacks = [EarlyBirdCallback(l1_self=strengths[0], l1_inter=strengths[1])] if name == "callback" else []
    made = penalty_trainer(bert(bert_dir), output_dir, strengths if name == "in_loss" else (0.0, 0.0),
                           [*callbacks, seen, logs], logging_steps=1, per_device_train_batch_size=4,
                           gradient_accumulation_steps=2)
    made.train()
    return {"seen": seen, "history": [h for h in made.state.log_history if "loss" in h],
            "logs": [entry for entry in logs.seen if "loss" in entry], "initial": read_coefficients(bert(bert_dir))}


def test_the_l1_subgradient_is_the_penalty_in_the_loss(penalty_runs):
    _, runs = penalty_runs
    ours, reference, task_only = (runs[name]["seen"] for name in ("callback", "in_loss", "none"))
    for block in ("msa", "mlp"):
        np.testing.assert_allclose(getattr(ours, block), getattr(reference, block), rtol=0, atol=2e-6)
        # ... and the penalty matters here: without it the coefficients end elsewhere
        assert np.abs(np.stack(getattr(ours, block)) - np.stack(getattr(task_only, block))).max() > 1e-2


def test_logs_hold_the_task_loss_and_the_l1_term(penalty_runs):
    strengths, runs = penalty_runs
    ours, reference = runs["callback"]["history"], runs["in_loss"]["history"]
    assert [h["step"] for h in ours] == list(range(1, 25))
    # The step-s forward passes used the coefficients after step s-1.
    before = [runs["callback"]["initial"]] + list(zip(runs["callback"]["seen"].msa, runs["callback"]["seen"].mlp))
    for entry, ref, (msa, mlp) in zip(ours, reference, before):
        expected = strengths[0] * np.abs(np.asarray(msa)).sum() + strengths[1] * np.abs(np.asarray(mlp)).sum()
        assert entry["l1_penalty"] == pytest.approx(expected, rel=1e-5)
        # the Trainer's `loss` is the task loss: the penalty-in-the-loss run logs their sum
        assert entry["loss"] + entry["l1_penalty"] == pytest.approx(ref["loss"], rel=1e-5)
        assert entry["loss"] < ref["loss"]
    # the same values reach the callbacks after ours (the progress bar prints them)
    assert [(e["loss"], e["l1_penalty"]) for e in runs["callback"]["logs"]] == [(e["loss"], e["l1_penalty"])
                                                                               for e in ours]


def test_an_fp16_grad_scaler_does_not_scale_the_l1_term(bert_dir, tmp_path):
    """The accelerate GradScaler path on the CPU (accelerate makes none there: one is set as it would be on a GPU).
    One SGD step with and without L1: the coefficients differ by exactly lr * l1 * sign(c)."""
    lr, strength = 0.05, 0.01
    after = {}
    for l1 in (strength, 0.0):
        made = trainer(bert(bert_dir), tmp_path / str(l1), [EarlyBirdCallback(l1_self=l1, l1_inter=l1)],
                       fp16=True, max_steps=1, learning_rate=lr)
        made.accelerator.scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12)
        made.accelerator.native_amp = True
        made.train()
        assert made.accelerator.scaler.get_scale() == 2.0 ** 12  # the step was taken, not skipped for overflow
        after[l1] = read_coefficients(made.model)
    for block in (0, 1):
        np.testing.assert_allclose((after[0.0][block] - after[strength][block]).numpy(), lr * strength, rtol=1e-3)


def test_gradient_accumulation_gives_the_records_of_one_big_batch(bert_dir, tmp_path):
    records = {}
    for per_device, accumulation in ((8, 1), (4, 2), (2, 4)):
        out = tmp_path / f"{per_device}x{accumulation}"
        trainer(bert(bert_dir), out, [EarlyBirdCallback(l1_self=0.05, l1_inter=0.05)],
                per_device_train_batch_size=per_device, gradient_accumulation_steps=accumulation).train()
        records[accumulation] = load_records(out / "records")
    for accumulation in (2, 4):
        assert records[accumulation].steps.tolist() == records[1].steps.tolist() == list(range(1, 25))
        np.testing.assert_allclose(records[accumulation].msa, records[1].msa, rtol=0, atol=2e-6)
        np.testing.assert_allclose(records[accumulation].mlp, records[1].mlp, rtol=0, atol=2e-6)


def test_coefficients_are_never_weight_decayed(bert_dir, tmp_path):
    """AdamW with decay 0.5 and gradients held at 0: the coefficients stay at 1 while a decayed weight shrinks; the
    optimizer's groups are the Trainer's own again after training (its checkpoints keep that layout)."""
    model = bert(bert_dir)
    weight = model.bert.encoder.layer[0].attention.self.query.weight
    held = [*head_coefficients(model), *neuron_coefficients(model), weight]
    for param in held:
        param.register_hook(torch.zeros_like)
    start = weight.detach().clone()
    made = trainer(model, tmp_path, [EarlyBirdCallback()], optim="adamw_torch", weight_decay=0.5, learning_rate=0.1,
                   max_steps=8)
    made.train()
    for coefficient in (*head_coefficients(model), *neuron_coefficients(model)):
        assert torch.equal(coefficient.detach(), torch.ones_like(coefficient))
    assert torch.allclose(weight.detach(), start * 0.95 ** 8)  # (1 - lr x decay) per step: decay is on
    decayed = {id(p) for p in made.optimizer.param_groups[0]["params"]}
    assert made.optimizer.param_groups[0]["weight_decay"] == 0.5
    assert all(id(c) in decayed for c in head_coefficients(model))  # the Trainer's layout, as created


class StopAt(TrainerCallback):
    """A run that ends abruptly after `step` (a kill after the checkpoint): what `resume_from_checkpoint` repairs."""

    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_resume_from_checkpoint_continues_the_records_and_the_detector(bert_dir, tmp_path):
    def callback():
        return EarlyBirdCallback(l1_self=0.02, l1_inter=0.02, method="slope", smooth=3, window=10, every=2,
                                 ratio=0.3)

    options = dict(optim="adamw_torch", weight_decay=0.1, learning_rate=1e-2, save_strategy="steps", save_steps=10)
    whole = callback()
    trainer(bert(bert_dir), tmp_path / "whole", [whole], **options).train()
    first = callback()
    trainer(bert(bert_dir), tmp_path / "cut", [first, StopAt(13)], **options).train()
    assert load_records(tmp_path / "cut" / "records").steps.tolist()[-1] == 13  # rows past the checkpoint
    second = callback()
    trainer(bert(bert_dir), tmp_path / "cut", [second], **options).train(
        resume_from_checkpoint=str(tmp_path / "cut" / "checkpoint-10"))

    expected, resumed = load_records(tmp_path / "whole" / "records"), load_records(tmp_path / "cut" / "records")
    assert resumed.steps.tolist() == expected.steps.tolist() == list(range(1, 25))
    np.testing.assert_allclose(resumed.msa, expected.msa, rtol=0, atol=1e-6)
    np.testing.assert_allclose(resumed.mlp, expected.mlp, rtol=0, atol=1e-6)
    assert whole.draw_step is not None and second.draw_step == whole.draw_step


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize("method, params, profile", [("slope", dict(smooth=3, window=10, every=3), "paper"),
                                                     ("hamming", dict(cached=3, threshold=0.1, every=2), "paper"),
                                                     ("slope", dict(smooth=3, window=14, every=3), "original")])
def test_the_draw_is_offline_detection_on_the_records(vit_dir, tmp_path, method, params, profile):
    callback = EarlyBirdCallback(l1_self=0.05, l1_inter=0.05, method=method, ratio=0.5, inter_pruning_ratio=0.3,
                                 profile=profile, **params)
    made = trainer(vit(vit_dir), tmp_path, [callback], dataset=Images(), max_steps=30, learning_rate=0.2)
    made.train()

    records = load_records(tmp_path / "records")
    offline = detect(records, block="msa", ratio=0.5, method=method, profile=profile, **params)
    assert callback.draw_step is not None and callback.draw_step == offline.draw_step
    assert records.steps[-1] == 30  # it trained on: no stop_at_draw
    assert [h["early_bird_step"] for h in made.state.log_history if "early_bird_step" in h] == [offline.draw_step]

    plan = load_plan(tmp_path / "plan.json")
    provenance = plan["provenance"]
    assert provenance["step"] == offline.draw_step
    detector = {k: v for k, v in offline.params.items() if k not in ("block", "ratio", "scope", "profile")}
    assert provenance["ebtrain"] == {"method": method, "block": "msa", "ratio": 0.5, "scope": "layerwise",
                                     "profile": profile, "params": detector}
    assert (provenance["self_ratio"], provenance["inter_ratio"]) == (0.5, 0.3)
    assert provenance["records"] == str((tmp_path / "records").resolve())
    expected = make_plan(records, offline.draw_step, 0.5, 0.3, profile=profile)  # 'original': FFN masks global
    for key in ("pruned_heads", "pruned_intermediate"):
        assert plan[key] == expected[key]


def test_scale_scales_the_study_parameters_to_the_run(vit_dir, tmp_path, capsys):
    callback = EarlyBirdCallback(l1_self=0.05, method="slope", scale=True, alpha=0.5)
    trainer(vit(vit_dir), tmp_path, [callback], dataset=Images(), max_steps=40, learning_rate=0.2).train()
    printed = capsys.readouterr().out
    assert "scale=True: smooth 5, window 30, every 5: the study's 200/300/100 scaled by 0.0027 = 40 / 14774" in printed
    summary = callback.summary()
    assert (summary["params"]["smooth"], summary["params"]["window"], summary["params"]["alpha"]) == (5, 30, 0.5)
    offline = detect(tmp_path / "records", method="slope", ratio=0.3, smooth=5, window=30, every=5, alpha=0.5)
    assert callback.draw_step == offline.draw_step


def test_stop_at_draw_stops_and_saves_the_ticket_pruned_and_folded(vit_dir, tmp_path):
    callback = EarlyBirdCallback(l1_self=0.05, l1_inter=0.05, method="hamming", cached=3, threshold=0.1, every=2,
                                 ratio=0.5, stop_at_draw=True, save_ticket=True)
    model = vit(vit_dir)
    made = trainer(model, tmp_path, [callback], dataset=Images(), max_steps=60, learning_rate=0.2,
                   processing_class=AutoImageProcessor.from_pretrained(vit_dir))
    made.train()
    step = callback.draw_step
    assert step is not None and made.state.global_step == step < 60
    assert load_records(tmp_path / "records").steps[-1] == step

    ticket_dir = tmp_path / "ticket"
    ticket, info = AutoModelForImageClassification.from_pretrained(ticket_dir, output_loading_info=True)
    assert not any(info.values())  # no missing, unexpected or mismatched keys
    assert not head_coefficients(ticket) and not neuron_coefficients(ticket)  # folded
    plan = load_plan(tmp_path / "plan.json")
    assert kept_sizes(ticket) == {"heads": [4 - len(plan["pruned_heads"][str(i)]) for i in range(2)],
                                  "intermediate": [37 - len(plan["pruned_intermediate"][str(i)]) for i in range(2)]}
    assert (ticket_dir / "preprocessor_config.json").is_file()

    # The ticket is the model at the draw with the pruned heads and neurons' coefficients zeroed.
    with torch.no_grad():
        for layer, indices in plan["pruned_heads"].items():
            head_coefficients(model)[int(layer)][indices] = 0
        for layer, indices in plan["pruned_intermediate"].items():
            neuron_coefficients(model)[int(layer)][indices] = 0
        pixels = Images().pixels[:6]
        torch.testing.assert_close(ticket.eval()(pixel_values=pixels).logits, model.eval()(pixel_values=pixels).logits,
                                   rtol=1e-4, atol=1e-5)


def test_the_report_on_a_trainer_run_stopped_at_the_draw_takes_the_runs_length_and_flops(vit_dir, tmp_path):
    """The records of a Trainer stopped at the draw end there; the report reads the callback's account (ebtrain.json):
    the run's budget (max_steps, what scale=True scaled to) and the Trainer's FLOPs, and says what kind of run it is."""
    from earlybird.report import build_report

    budget = 200
    callback = EarlyBirdCallback(l1_self=0.05, method="slope", scale=True, alpha=0.5, stop_at_draw=True)
    made = trainer(vit(vit_dir), tmp_path / "run", [callback], dataset=Images(), max_steps=budget, learning_rate=0.2)
    made.train()
    step = callback.draw_step
    assert step is not None and made.state.global_step == step < budget
    account = json.loads((tmp_path / "run" / "ebtrain.json").read_text())
    assert (account["total_steps"], account["steps_run"], account["draw_step"]) == (budget, step, step)
    assert account["flops"]["total"] == made.state.total_flos > 0

    text = build_report([tmp_path / "run"], tmp_path / "out", ratios=(0.3,), log=lambda _: None).read_text()
    assert "Run: a transformers Trainer with EarlyBirdCallback; it drew at step" in text
    assert f"scaled by {budget / 14774:.4f} = {budget} / 14774 steps" in text  # the callback's scaling, not the records'
    row = re.search(r"^\| MSA \| 30% \| sliding-window regression \(HAC p-value\) \| (\d+) \| ([\d.]+)% \| [^|]+ \| "
                    r"([^|]+) \|", text, flags=re.M)
    assert row.groups() == (str(step), f"{100 * step / budget:.1f}", f"{made.state.total_flos:.3g}")


def test_a_bert_ticket_reloads_with_its_tokenizer(bert_dir, tmp_path):
    callback = EarlyBirdCallback(l1_self=0.05, l1_inter=0.05, method="slope", smooth=3, window=10, every=2,
                                 stop_at_draw=True, save_ticket=True)
    made = trainer(bert(bert_dir), tmp_path, [callback], max_steps=40,
                   processing_class=AutoTokenizer.from_pretrained(bert_dir))
    made.train()
    assert made.state.global_step == callback.draw_step
    ticket, info = AutoModelForSequenceClassification.from_pretrained(tmp_path / "ticket", output_loading_info=True)
    assert not any(info.values()) and ticket.config.pruned_heads
    assert AutoTokenizer.from_pretrained(tmp_path / "ticket").vocab_size == made.processing_class.vocab_size


# --------------------------------------------------------------------------- nothing per step


def test_no_host_transfer_between_checks_and_flushes(bert_dir, tmp_path, monkeypatch):
    """Every way a tensor reaches the host, counted inside the callback's per-step events: none on a step that is
    neither a detector check (every 5) nor a records flush (chunk 8). On a GPU each would be a sync."""
    reads: list[int] = []
    inside = {"step": None}

    def spy(name):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, **kwargs):
            if inside["step"] is not None:
                reads.append(inside["step"])
            return original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)

    for name in ("cpu", "numpy", "item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        spy(name)

    class Spied(EarlyBirdCallback):
        def _event(self, event, args, state, control, **kwargs):
            inside["step"] = state.global_step
            try:
                return getattr(super(), event)(args, state, control, **kwargs)
            finally:
                inside["step"] = None

        def on_pre_optimizer_step(self, *a, **k):
            return self._event("on_pre_optimizer_step", *a, **k)

        def on_optimizer_step(self, *a, **k):
            return self._event("on_optimizer_step", *a, **k)

        def on_step_end(self, *a, **k):
            return self._event("on_step_end", *a, **k)

    callback = Spied(l1_self=1e-2, l1_inter=1e-2, method="slope", smooth=3, window=10, every=5,
                      patience=100, record_chunk=8)  # (no draw: its plan would flush the records out of turn)
    trainer(bert(bert_dir), tmp_path, [callback], logging_steps=100).train()
    checks, flushes = {4, 9, 14, 19, 24}, {8, 16, 24}
    assert reads and set(reads) <= checks | flushes
    assert set(reads) & checks and set(reads) & flushes


# --------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("kwargs, message", [
    (dict(method="spline"), "unknown method 'spline'; choose one of hamming, slope, mk, adf"),
    (dict(method="slope", cached=5), "cached does not apply to method slope"),
    (dict(method="hamming", window=300), "window does not apply to method hamming"),
    (dict(method="slope", windw=300), "unexpected keyword argument 'windw'; the detector parameters are cached, "),
    (dict(window=30), "window needs method"),
    (dict(method="slope", window=5), "window must be an integer >= 10; got 5"),
    (dict(method="hamming", threshold=2.0), "threshold must be in (0, 1]; got 2.0"),
    (dict(method="slope", ratio=1.2), "ratio: pruning ratio must be in [0, 1), got 1.2"),
    (dict(method="slope", self_pruning_ratio=-0.1), "self_pruning_ratio: pruning ratio must be in [0, 1), got -0.1"),
    (dict(method="slope", inter_pruning_ratio=1.0), "inter_pruning_ratio: pruning ratio must be in [0, 1), got 1.0"),
    (dict(method="slope", block="ffn"), "block must be one of msa, mlp, both; got 'ffn'"),
    (dict(method="slope", scope="local"), "scope must be one of layerwise, global, uniform; got 'local'"),
    (dict(method="slope", inter_pruning_scope="local"), "inter_pruning_scope: scope must be one of"),
    (dict(l1_self=-1e-4), "l1_self must be >= 0, got -0.0001"),
    (dict(record_every=0), "record_every must be >= 1, got 0"),
    (dict(stop_at_draw=True), "stop_at_draw needs method"),
    (dict(self_pruning_ratio=0.3), "self_pruning_ratio needs method"),
    (dict(method="slope", profile="notebooks"), "unknown profile 'notebooks'; choose one of paper, original"),
    (dict(profile="original"), "profile needs method"),
])
def test_bad_arguments_are_refused_at_construction(kwargs, message):
    with pytest.raises(EarlyBirdError) as caught:
        EarlyBirdCallback(**kwargs)
    text = str(caught.value)
    assert text.startswith("EarlyBirdCallback: ") and message in text and "\n" not in text and "--" not in text


@pytest.mark.parametrize("flags, kwargs, message", [
    (dict(self_slimming=False, inter_slimming=False), dict(l1_self=1e-4),
     "BertForSequenceClassification has no slimming coefficients: load it with from_pretrained(..., "
     "self_slimming=True, inter_slimming=True)"),
    (dict(inter_slimming=False), dict(l1_inter=1e-4),
     "l1_inter needs inter_slimming (there are no neuron coefficients to penalise) (the model, "
     "BertForSequenceClassification, was loaded with self_slimming=True, inter_slimming=False)"),
    (dict(self_slimming=False), dict(method="slope", block="msa"),
     "block msa watches the msa coefficients: pass self_slimming (the model"),
    (dict(self_slimming=False), dict(method="slope", block="mlp", self_pruning_ratio=0.3),
     "self_pruning_ratio > 0 in EB-Train needs self_slimming"),
    ({}, dict(method="slope", window=300),
     "method slope: the slope detector can never test on this run's 24 steps (recorded every 1) (24 observed, "
     "steps 1..24): it needs window=300 observed steps and then a check (every 100 steps), so its first test would "
     "be at step 399; expected a smaller window / every or a longer run (one reaching step 399) (the keyword "
     "arguments of those parameters, or max_steps=399 or more)"),
])
def test_bad_arguments_for_the_model_or_the_run_are_refused_before_the_first_step(bert_dir, tmp_path, flags, kwargs,
                                                                                   message):
    seen = Coefficients()
    with pytest.raises(EarlyBirdError) as caught:
        trainer(bert(bert_dir, **flags), tmp_path, [EarlyBirdCallback(**kwargs), seen]).train()
    assert str(caught.value).startswith("EarlyBirdCallback: ") and message in str(caught.value)
    assert not seen.steps and not (tmp_path / "records").exists()


def test_a_new_run_over_old_records_is_refused(bert_dir, tmp_path):
    trainer(bert(bert_dir), tmp_path, [EarlyBirdCallback()], max_steps=2).train()
    with pytest.raises(EarlyBirdError, match=r"already holds records; .* \(resume_from_checkpoint continues a run; "
                                             r"a new run needs a new output_dir\)"):
        trainer(bert(bert_dir), tmp_path, [EarlyBirdCallback()], max_steps=2).train()


def test_an_optimizer_that_decays_everything_is_refused(bert_dir, tmp_path):
    model = bert(bert_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    made = Trainer(model=model, args=arguments(tmp_path), train_dataset=Tokens(), callbacks=[EarlyBirdCallback()],
                   optimizers=(optimizer, None))
    with pytest.raises(EarlyBirdError, match="the optimizer decays the slimming coefficients"):
        made.train()
