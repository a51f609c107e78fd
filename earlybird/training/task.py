"""What an entry point hands the training loop: its model, data and evaluation, and nothing else.

The loop (earlybird.training.loop) knows nothing of images, tokens or answers; a `Task` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


@dataclass
class EvalSet:
    """An evaluation split.

    `outputs(model_output, batch)` picks the per-example tensors to gather across processes (first
    dimension = batch, the rest fixed in size); `compute(arrays)` turns the gathered arrays, in dataset
    order, into metrics (it runs on the main process only).
    """

    dataset: Any
    collate_fn: Callable
    outputs: Callable[[Any, dict], dict]
    compute: Callable[[dict], dict]


@dataclass
class Task:
    name: str
    model_class: type
    # config overrides (the slimming flags) -> the model a run starts from when it is not a ticket or a resume
    build_model: Callable[[dict], torch.nn.Module]
    train_dataset: Any  # map-style; its training batches of indices carry their epoch (`indices.epoch`)
    collate_fn: Callable
    eval_sets: dict
    final_split: str
    # tokens per example of a (host-side) batch, for the FLOPs count: fixed for images, padded length for text
    tokens_per_example: Callable[[dict], int]
    compute_loss: Callable | None = None  # (model, batch) -> loss; default: the model's own `.loss`
    save_extras: Callable[[Path], None] | None = None  # tokenizer / image processor beside the weights
    info: dict = field(default_factory=dict)  # what results.json should say about the data
    num_labels: int | None = None  # classes of the data (classification): the model's head must have as many
    vocab_size: int | None = None  # len(tokenizer) (text): the model's embeddings must hold as many
    image_size: int | None = None  # the side the transforms produce (images): the model's config must take it
    # (batch on the device, the model's dtype) -> the model's input: work done after the copy (images: normalisation)
    prepare_batch: Callable[[dict, torch.dtype], dict] | None = None


def classification_eval_set(dataset, collate_fn) -> EvalSet:
    """Accuracy (local `evaluate` metric) and mean cross-entropy from gathered logits and labels."""

    def outputs(out, batch):
        return {"logits": out.logits.float(), "labels": batch["labels"]}

    def compute(arrays):
        from ..metrics import load_metric

        logits, labels = arrays["logits"], arrays["labels"]
        predictions = logits.argmax(-1)
        metrics = load_metric("accuracy").compute(predictions=predictions, references=labels)
        shifted = logits - logits.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        metrics["loss"] = float(-log_probs[np.arange(len(labels)), labels].mean()) if len(labels) else 0.0
        return metrics

    return EvalSet(dataset, collate_fn, outputs, compute)
