"""Text data: GLUE-style sentence classification and SQuAD v1.1 question answering.

Classification reads the Hub's `glue` or local TSV/CSV/JSON-lines files with a `sentence` (or
`sentence1`/`sentence2`) and a `label` column. SQuAD reads the Hub's `squad` or SQuAD-format JSON
files. The QA preprocessing and postprocessing follow the Hugging Face reference (run_qa.py):
long contexts are split into overlapping windows (`max_seq_length`, `doc_stride`), answers are
located through the tokenizer's offset mapping, and predictions come from the best start/end
logits of an example's windows.
"""

from __future__ import annotations

import collections
import csv
import json
from pathlib import Path

import numpy as np
import torch

from ..errors import EarlyBirdError
from .common import load_dataset_any

GLUE_KEYS = {
    "cola": ("sentence", None), "sst2": ("sentence", None), "mrpc": ("sentence1", "sentence2"),
    "qqp": ("question1", "question2"), "mnli": ("premise", "hypothesis"), "qnli": ("question", "sentence"),
    "rte": ("sentence1", "sentence2"), "wnli": ("sentence1", "sentence2"),
}
TEXT_COLUMN_CHOICES = (("sentence", None), ("sentence1", "sentence2"), ("text", None))

# --------------------------------------------------------------------------- classification


def read_table(path) -> list[dict]:
    """Rows of a local .tsv (GLUE style: tab-separated, no quoting), .csv or .json/.jsonl file."""
    path = Path(path)
    if not path.is_file():
        raise EarlyBirdError(f"{path}: no such file")
    suffix = path.suffix.lower()
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if suffix in (".tsv", ".txt"):
                rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
            elif suffix == ".csv":
                rows = list(csv.DictReader(f))
            elif suffix in (".json", ".jsonl"):
                text = f.read().strip()
                rows = json.loads(text) if text.startswith("[") else [json.loads(line) for line in text.splitlines() if line.strip()]
            else:
                raise EarlyBirdError(f"{path}: expected a .tsv, .csv, .json or .jsonl file")
    except (OSError, UnicodeDecodeError, ValueError, csv.Error) as err:
        raise EarlyBirdError(f"{path}: cannot read it ({err})") from None
    if not rows:
        raise EarlyBirdError(f"{path}: no rows (an empty data set); expected a header line and at least one example")
    return rows


def load_classification_files(files: dict) -> "datasets.DatasetDict":  # noqa: F821
    """{"train": path, "validation": path, "test": path} -> DatasetDict with integer labels."""
    import datasets

    tables = {split: read_table(path) for split, path in files.items() if path}
    label_ids = None
    out = {}
    for split, rows in tables.items():
        columns = set(rows[0])
        if "label" not in columns:
            raise EarlyBirdError(f"{files[split]}: no 'label' column; columns: {', '.join(sorted(columns))}")
        pick_text_columns(columns, None, files[split])
        raw = [r["label"] for r in rows]
        try:
            labels = [int(v) for v in raw]
        except (TypeError, ValueError):
            if label_ids is None:  # string labels: numbered in sorted order, from the training file
                label_ids = {v: i for i, v in enumerate(sorted(set(raw)))}
            unknown = sorted(set(raw) - set(label_ids))
            if unknown:
                raise EarlyBirdError(f"{files[split]}: labels {unknown[:3]} do not occur in the training file") from None
            labels = [label_ids[v] for v in raw]
        data = {c: [r.get(c) or "" for r in rows] for c in columns if c != "label"}
        data["label"] = labels
        out[split] = datasets.Dataset.from_dict(data)
    return datasets.DatasetDict(out)


def pick_text_columns(columns, glue_task: str | None, where) -> tuple[str, str | None]:
    if glue_task in GLUE_KEYS and all(c is None or c in columns for c in GLUE_KEYS[glue_task]):
        return GLUE_KEYS[glue_task]
    for first, second in TEXT_COLUMN_CHOICES:
        if first in columns and (second is None or second in columns):
            return first, second
    raise EarlyBirdError(f"{where}: no text column (expected 'sentence', 'sentence1'/'sentence2' or 'text'); "
                         f"columns: {', '.join(sorted(columns))}")


def load_classification(glue_task: str | None, files: dict, cache_dir=None):
    if any(files.values()):
        if not files.get("train"):
            raise EarlyBirdError("--train-file is needed with --validation-file/--test-file")
        return load_classification_files(files)
    if not glue_task:
        raise EarlyBirdError("--task glue needs --glue-task NAME (Hub `glue`) or --train-file (local TSV/CSV)")
    return load_dataset_any("glue", cache_dir=cache_dir, name=glue_task)


def tokenize_classification(dataset, tokenizer, text_columns, max_seq_length: int):
    first, second = text_columns

    def encode(batch):
        args = (batch[first],) if second is None else (batch[first], batch[second])
        encoded = tokenizer(*args, truncation=True, max_length=max_seq_length)
        encoded["labels"] = batch["label"]
        return encoded

    return dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="tokenizing")


class TokenizedDataset(torch.utils.data.Dataset):
    """Rows of a data set tokenised once (`Dataset.map`, before training): a batch is one read of its rows, which the
    collator pads; no tokenizer runs during training. Held in memory or memory-mapped, so the loader needs no worker
    processes (`decodes_from_files` is False)."""

    decodes_from_files = False

    def __init__(self, dataset, columns=None):
        self.dataset = dataset if columns is None else dataset.select_columns(list(columns))

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        return self.dataset[int(index)]

    def __getitems__(self, indices) -> list[dict]:
        return self.dataset.__getitems__([int(i) for i in indices])  # one Arrow read for the batch


def pad_collator(tokenizer):
    """Dynamic padding to the longest sequence of the batch."""
    from transformers import DataCollatorWithPadding

    return DataCollatorWithPadding(tokenizer, return_tensors="pt")


# --------------------------------------------------------------------------- SQuAD


def read_squad_json(path) -> "datasets.Dataset":  # noqa: F821
    """A SQuAD v1.1 JSON file, flattened to one row per question (id, title, context, question, answers)."""
    import datasets

    path = Path(path)
    if not path.is_file():
        raise EarlyBirdError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise EarlyBirdError(f"{path}: not readable JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise EarlyBirdError(f"{path}: not SQuAD format (expected {{\"data\": [{{\"paragraphs\": ...}}]}})")
    rows = {"id": [], "title": [], "context": [], "question": [], "answers": []}
    try:
        for article in data["data"]:
            for paragraph in article["paragraphs"]:
                for qa in paragraph["qas"]:
                    rows["id"].append(str(qa["id"]))
                    rows["title"].append(article.get("title", ""))
                    rows["context"].append(paragraph["context"])
                    rows["question"].append(qa["question"])
                    rows["answers"].append({"text": [a["text"] for a in qa.get("answers", [])],
                                            "answer_start": [int(a["answer_start"]) for a in qa.get("answers", [])]})
    except (KeyError, TypeError) as err:
        raise EarlyBirdError(f"{path}: not SQuAD format (missing {err})") from None
    if not rows["id"]:
        raise EarlyBirdError(f"{path}: no questions")
    return datasets.Dataset.from_dict(rows)


def load_squad(train_file, predict_file, cache_dir=None):
    import datasets

    if train_file or predict_file:
        if not (train_file and predict_file):
            raise EarlyBirdError("--task squad with local files needs both --train-file and --predict-file")
        return datasets.DatasetDict({"train": read_squad_json(train_file), "validation": read_squad_json(predict_file)})
    return load_dataset_any("squad", cache_dir=cache_dir)


def check_squad_columns(dataset, where: str) -> None:
    missing = [c for c in ("id", "context", "question", "answers") if c not in dataset.column_names]
    if missing:
        raise EarlyBirdError(f"{where}: missing column(s) {', '.join(missing)}; columns: {', '.join(dataset.column_names)}")


def _squad_windows(examples, tokenizer, max_seq_length: int, doc_stride: int):
    """(encoding, window -> example index, whether the context is the second sequence): each (question, context) cut
    into windows of max_seq_length tokens overlapping by doc_stride, the question on the tokenizer's padding side."""
    pad_right = tokenizer.padding_side == "right"
    questions = [q.lstrip() for q in examples["question"]]
    enc = tokenizer(questions if pad_right else examples["context"], examples["context"] if pad_right else questions,
                    truncation="only_second" if pad_right else "only_first", max_length=max_seq_length,
                    stride=doc_stride, return_overflowing_tokens=True, return_offsets_mapping=True,
                    padding="max_length")
    sample_map = enc.pop("overflow_to_sample_mapping")
    return enc, sample_map, pad_right


def prepare_train_features(examples, tokenizer, max_seq_length: int, doc_stride: int):
    """Windows of (question, context) with start/end token positions of the answer (CLS when outside)."""
    enc, sample_map, pad_right = _squad_windows(examples, tokenizer, max_seq_length, doc_stride)
    offsets_all = enc.pop("offset_mapping")
    enc["start_positions"], enc["end_positions"] = [], []
    context_id = 1 if pad_right else 0
    for i, offsets in enumerate(offsets_all):
        input_ids = enc["input_ids"][i]
        cls_index = input_ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in input_ids else 0
        sequence_ids = enc.sequence_ids(i)
        answers = examples["answers"][sample_map[i]]
        if len(answers["answer_start"]) == 0:
            enc["start_positions"].append(cls_index)
            enc["end_positions"].append(cls_index)
            continue
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        token_start = 0
        while sequence_ids[token_start] != context_id:
            token_start += 1
        token_end = len(input_ids) - 1
        while sequence_ids[token_end] != context_id:
            token_end -= 1
        if not (offsets[token_start][0] <= start_char and offsets[token_end][1] >= end_char):
            enc["start_positions"].append(cls_index)  # the answer is not in this window
            enc["end_positions"].append(cls_index)
            continue
        # The first context token that ends after the answer's first character, and the last one that starts
        # before its end (walking within the context only: [SEP] and padding have (0, 0) offsets).
        while offsets[token_start][1] <= start_char:
            token_start += 1
        while offsets[token_end][0] >= end_char:
            token_end -= 1
        enc["start_positions"].append(token_start)
        enc["end_positions"].append(token_end)
    return enc


def prepare_validation_features(examples, tokenizer, max_seq_length: int, doc_stride: int):
    """Windows padded to max_seq_length, with the example id and the context-only offset mapping."""
    enc, sample_map, pad_right = _squad_windows(examples, tokenizer, max_seq_length, doc_stride)
    context_id = 1 if pad_right else 0
    enc["example_id"] = []
    for i in range(len(enc["input_ids"])):
        sequence_ids = enc.sequence_ids(i)
        enc["example_id"].append(examples["id"][sample_map[i]])
        enc["offset_mapping"][i] = [o if sequence_ids[k] == context_id else None
                                    for k, o in enumerate(enc["offset_mapping"][i])]
    return enc


def postprocess_qa_predictions(examples, features, start_logits, end_logits, n_best_size: int = 20,
                               max_answer_length: int = 30) -> dict:
    """{example id: answer text}: the best-scoring valid span (start <= end, inside the context) of its windows."""
    features_per_example = collections.defaultdict(list)
    index_of_id = {k: i for i, k in enumerate(examples["id"])}
    for i, example_id in enumerate(features["example_id"]):
        features_per_example[index_of_id[example_id]].append(i)
    predictions = {}
    offsets_all = features["offset_mapping"]
    for example_index, (example_id, context) in enumerate(zip(examples["id"], examples["context"])):
        best_score, best_text = None, ""
        for feature_index in features_per_example[example_index]:
            starts, ends = start_logits[feature_index], end_logits[feature_index]
            offsets = offsets_all[feature_index]
            start_indexes = np.argsort(starts)[-1:-n_best_size - 1:-1]
            end_indexes = np.argsort(ends)[-1:-n_best_size - 1:-1]
            for s in start_indexes:
                for e in end_indexes:
                    if s >= len(offsets) or e >= len(offsets) or offsets[s] is None or offsets[e] is None:
                        continue
                    if e < s or e - s + 1 > max_answer_length:
                        continue
                    score = starts[s] + ends[e]
                    if best_score is None or score > best_score:
                        best_score, best_text = score, context[offsets[s][0]:offsets[e][1]]
        predictions[example_id] = best_text
    return predictions


# --------------------------------------------------------------------------- causal language modelling


def load_text_corpus(train_file, validation_file, dataset_name, cache_dir=None):
    """A DatasetDict with a `text` column: local text files (one example per line, the `datasets` "text" builder),
    else a `datasets` directory or hub id (`--dataset-name`)."""
    import datasets

    if train_file or validation_file:
        if not train_file:
            raise EarlyBirdError("--validation-file needs --train-file (local text files)")
        files = {"train": train_file, **({"validation": validation_file} if validation_file else {})}
        for split, path in files.items():
            if not Path(path).is_file():
                raise EarlyBirdError(f"--{split.replace('train', 'train-file').replace('validation', 'validation-file')}"
                                     f" {path}: no such file")
        try:
            return datasets.load_dataset("text", data_files=files, cache_dir=cache_dir)
        except Exception as err:  # an unreadable file: one line naming it
            raise EarlyBirdError(f"--train-file {train_file}: cannot read it as text ({' '.join(str(err).split())[:200]})"
                                 ) from None
    if not dataset_name:
        raise EarlyBirdError("causal LM fine-tuning needs --train-file (a local text file) or --dataset-name")
    return load_dataset_any(dataset_name, cache_dir=cache_dir)


def tokenize_blocks(dataset, tokenizer, text_column: str, block_size: int, where: str):
    """The texts tokenised, concatenated (an end-of-text token after each when the tokenizer has one) and cut into
    blocks of `block_size` tokens, the remainder dropped; `labels` are the input ids (the model shifts them), as
    the Hugging Face reference run_clm.py groups texts."""
    if text_column not in dataset.column_names:
        raise EarlyBirdError(f"{where}: no {text_column!r} column (columns: {', '.join(dataset.column_names)}); "
                             "expected --text-column NAME")
    eos = tokenizer.eos_token_id

    def encode(batch):
        ids = tokenizer([t for t in batch[text_column] if t and t.strip()], add_special_tokens=False)["input_ids"]
        return {"input_ids": [row + ([eos] if eos is not None else []) for row in ids]}

    def group(batch):
        flat = [token for row in batch["input_ids"] for token in row]
        usable = len(flat) // block_size * block_size
        blocks = [flat[i : i + block_size] for i in range(0, usable, block_size)]
        return {"input_ids": blocks, "labels": [list(b) for b in blocks]}

    tokens = dataset.map(encode, batched=True, remove_columns=dataset.column_names, desc="tokenizing")
    # one group over the whole split (batch_size=None): no tokens are lost at batch borders
    blocks = tokens.map(group, batched=True, batch_size=None, desc=f"blocks of {block_size}")
    if len(blocks) == 0:
        raise EarlyBirdError(f"{where}: fewer than --block-size {block_size} tokens of text; expected more text or a "
                             "smaller --block-size")
    return blocks
