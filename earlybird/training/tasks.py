"""The tasks: the three of the study and causal-LM fine-tuning, each as its extra flags + a `build_*_task(args, accelerator) -> Task`.

* ViT fine-tuning for image classification (Finetuning/run_vit.py)
* BERT on SQuAD v1.1 or GLUE-style classification (Finetuning/run_bert.py)
* a small ViT trained from scratch on CIFAR-10 or the embedded digits (ViT_pretraining/main.py)
* causal-LM fine-tuning of a decoder (Llama, Qwen3) on text (Finetuning/run_clm.py)
"""

from __future__ import annotations

import argparse
import contextlib
from pathlib import Path

import torch

from .. import faults
from ..data import common, images, text
from ..errors import EarlyBirdError
from .task import EvalSet, Task, classification_eval_set

# --------------------------------------------------------------------------- shared


VIT_DEFAULT_MODEL = "google/vit-base-patch16-224-in21k"
BERT_DEFAULT_MODEL = "bert-base-uncased"


def _default_model(args, hub_default: str) -> None:
    """--model-name-or-path not given: a ticket's --init-checkpoint (its config and tokenizer / image processor are
    the ticket's model's), else the study's hub model. The value is written into args.json with the other flags."""
    if args.model_name_or_path is None:
        args.model_name_or_path = getattr(args, "init_checkpoint", None) or hub_default


def _load_config(path: str, expected: str | tuple, flag: str = "--model-name-or-path"):
    """The model config at `path` (a directory, a hub id, or a config.json file) of a model type in `expected`."""
    from huggingface_hub import constants
    from transformers import AutoConfig

    expected = (expected,) if isinstance(expected, str) else expected
    if constants.HF_HUB_OFFLINE and not Path(path).exists():  # one clear line, before transformers' long one
        from huggingface_hub import try_to_load_from_cache

        try:
            cached = isinstance(try_to_load_from_cache(path, "config.json"), str)
        except Exception:  # not a valid hub id either (e.g. a path that does not exist)
            cached = False
        if not cached:
            raise EarlyBirdError(f"{flag} {path}: cannot load a model config: not a local directory, and the hub is off "
                                 "(HF_HUB_OFFLINE=1) with no cached copy; expected a local model directory")
    try:
        config = AutoConfig.from_pretrained(str(Path(path).parent) if Path(path).is_file() else path)
    except Exception as err:  # OSError offline / missing, ValueError for unknown model types
        raise EarlyBirdError(f"{flag} {path}: cannot load a model config ({' '.join(str(err).split())[:200]})") from None
    if config.model_type not in expected:
        raise EarlyBirdError(f"{flag} {path}: a {config.model_type!r} model; this entry point trains "
                             f"{' and '.join(map(repr, expected))} models")
    return config


@contextlib.contextmanager
def preparing_data(accelerator, args):
    """accelerate's `main_process_first`, with its barriers spelled out: the main process downloads, indexes or
    tokenises (and fills the datasets cache) while the others wait, then they read its cache. A wait longer than
    --ddp-timeout-minutes stops a waiting process with one line naming the flag, not the collective's traceback."""
    if accelerator.is_main_process:
        faults.hit("data-prepare")  # test-only: a slow preparation (earlybird.faults `stall=S`)
        yield
        accelerator.wait_for_everyone()
        return
    try:
        accelerator.wait_for_everyone()
    except RuntimeError as err:  # torch.distributed's DistBackendError is one
        if "timed out" not in str(err).lower():
            raise
        error = EarlyBirdError(
            f"waited more than --ddp-timeout-minutes {args.ddp_timeout_minutes:g} for the main process to prepare the "
            "data; expected a longer --ddp-timeout-minutes (or the data prepared beforehand, in the datasets cache)")
        # Said by process 1 on the main process's machine (whose local main process is not waiting), and by each
        # other machine's local main process, as the runner says every error.
        error.print_here = accelerator.process_index == 1
        raise error from None
    yield


def _image_datasets(args, accelerator, where: str):
    """Train / validation / test splits of an image data set, with their columns and label names."""
    with preparing_data(accelerator, args):  # one process downloads / builds the cache, the others read it
        if args.dataset == "digits":
            from ..data.digits import load_digits_dataset

            dd = load_digits_dataset(args.cache_dir)
        else:
            dd = common.load_dataset_any(args.dataset, cache_dir=args.cache_dir, builder="imagefolder")
    first = next(iter(dd.values()))
    image_column = common.find_column(first, images.IMAGE_COLUMNS, "image", where)
    label_column = common.find_column(first, images.LABEL_COLUMNS, "label", where)
    splits, final = common.resolve_splits(dd, label_column, where)
    for name, split in splits.items():
        for column in (image_column, label_column):
            if column not in split.column_names:
                raise EarlyBirdError(f"{where}: the {name} split has no {column!r} column")
    names = images.label_names(splits["train"], label_column, where)
    splits["train"] = common.subset(splits["train"], args.max_train_samples)
    for name in ("validation", "test"):
        splits[name] = common.subset(splits[name], args.max_eval_samples)
    common.check_labels(splits, label_column, len(names), where)
    return splits, final, image_column, label_column, names


def _image_task(name, args, splits, final, image_column, label_column, size, mean, std, train_transform,
                build_model, tokens, compute_loss=None, info=None, num_labels=None) -> Task:
    from transformers import ViTForImageClassification
    from transformers.models.vit import ViTImageProcessorPil

    eval_transform = images.ImageTransform("eval", size, mean, std)
    train = images.ImageClassificationDataset(splits["train"], image_column, label_column, train_transform, args.seed)
    eval_sets = {k: classification_eval_set(
        images.ImageClassificationDataset(splits[k], image_column, label_column, eval_transform), images.collate_images)
        for k in ("validation", "test")}

    def save_extras(path):
        ViTImageProcessorPil(size={"height": size, "width": size}, image_mean=list(mean), image_std=list(std)).save_pretrained(path)

    return Task(name=name, model_class=ViTForImageClassification, build_model=build_model, train_dataset=train,
                collate_fn=images.collate_images, eval_sets=eval_sets, final_split=final,
                tokens_per_example=lambda batch: tokens, compute_loss=compute_loss, save_extras=save_extras,
                info={"dataset": args.dataset, "train_examples": len(train), **(info or {})}, num_labels=num_labels,
                image_size=size, prepare_batch=eval_transform.on_device)  # the train transform's mean / std too


# --------------------------------------------------------------------------- ViT fine-tuning


def add_vit_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("ViT fine-tuning")
    g.add_argument("--model-name-or-path", default=None,
                   help="a hub id or a local directory of a pretrained ViT (default: a ticket's --init-checkpoint, "
                        f"else {VIT_DEFAULT_MODEL})")
    g.add_argument("--dataset", default="imagenet-1k",
                   help="a hub data set (imagenet-1k, cifar10), an imagefolder directory, or a save_to_disk directory")


def build_vit_task(args, accelerator) -> Task:
    from transformers import ViTForImageClassification

    _default_model(args, VIT_DEFAULT_MODEL)
    config = _load_config(args.model_name_or_path, "vit")
    splits, final, image_column, label_column, names = _image_datasets(args, accelerator, f"--dataset {args.dataset}")
    size, mean, std = images.image_settings(args.model_name_or_path, config)
    if size != config.image_size:  # the position embeddings are made for config.image_size
        raise EarlyBirdError(f"--model-name-or-path {args.model_name_or_path}: its image processor resizes to {size} "
                             f"but the model takes {config.image_size}x{config.image_size} images")
    patch = config.patch_size

    def build_model(overrides):
        return ViTForImageClassification.from_pretrained(
            args.model_name_or_path, num_labels=len(names), id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)}, ignore_mismatched_sizes=True, **overrides)

    return _image_task("vit", args, splits, final, image_column, label_column, size, mean, std,
                       images.ImageTransform("train", size, mean, std), build_model, (size // patch) ** 2 + 1,
                       num_labels=len(names))


# --------------------------------------------------------------------------- small ViT from scratch

PRETRAIN_PRESETS = {
    # scaled down so a few hundred steps run in well under a minute on 2 CPU cores (~93% test accuracy in
    # 360 steps); no shifts or flips: an 8x8 digit is centred, and a 1-pixel shift costs ~25 points
    "digits": dict(image_size=8, patch_size=2, num_layers=4, hidden_size=64, num_heads=4, intermediate_size=128,
                   per_device_train_batch_size=64, num_train_epochs=20, learning_rate=1e-3, weight_decay=5e-5,
                   crop_padding=0, flip=False, randaug_ops=0, randaug_magnitude=5),
    # the study's small ViT on CIFAR-10 (7 layers, hidden 384, 12 heads, MLP 384, patch 4 on 32x32)
    "cifar": dict(image_size=32, patch_size=4, num_layers=7, hidden_size=384, num_heads=12, intermediate_size=384,
                  per_device_train_batch_size=128, num_train_epochs=200, learning_rate=1e-3, weight_decay=5e-5,
                  crop_padding=4, flip=True, randaug_ops=2, randaug_magnitude=9),
}


def add_pretrain_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("small ViT from scratch (defaults: the preset of the data set)")
    g.add_argument("--dataset", default="digits",
                   help="digits (embedded, the default), cifar10 (hub), or a local imagefolder / save_to_disk directory")
    for flag in ("image-size", "patch-size", "num-layers", "hidden-size", "num-heads", "intermediate-size",
                 "crop-padding", "randaug-ops", "randaug-magnitude"):
        g.add_argument(f"--{flag}", type=int, default=None)
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None, help="random horizontal flips")
    g.add_argument("--label-smoothing", type=float, default=0.1)
    g.add_argument("--dropout", type=float, default=0.0, help="hidden and attention dropout")
    # Budget and optimiser defaults come from the preset unless given.
    parser.set_defaults(per_device_train_batch_size=None, num_train_epochs=None, learning_rate=None,
                        weight_decay=None, warmup_ratio=0.025, lr_scheduler="cosine", per_device_eval_batch_size=256)


def fill_pretrain_defaults(args) -> None:
    preset = PRETRAIN_PRESETS["digits" if args.dataset == "digits" else "cifar"]
    for key, value in preset.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    if args.hidden_size % args.num_heads:
        raise EarlyBirdError(f"--hidden-size {args.hidden_size} is not a multiple of --num-heads {args.num_heads}")
    if args.image_size % args.patch_size:
        raise EarlyBirdError(f"--image-size {args.image_size} is not a multiple of --patch-size {args.patch_size}")
    if not 0.0 <= args.label_smoothing < 1.0:
        raise EarlyBirdError(f"--label-smoothing must be in [0, 1), got {args.label_smoothing}")


def build_pretrain_task(args, accelerator) -> Task:
    from transformers import ViTConfig, ViTForImageClassification

    splits, final, image_column, label_column, names = _image_datasets(args, accelerator, f"--dataset {args.dataset}")
    size = args.image_size
    mean = std = (0.5, 0.5, 0.5)

    def build_model(overrides):
        config = ViTConfig(
            image_size=size, patch_size=args.patch_size, num_channels=3, hidden_size=args.hidden_size,
            num_hidden_layers=args.num_layers, num_attention_heads=args.num_heads,
            intermediate_size=args.intermediate_size, hidden_dropout_prob=args.dropout,
            attention_probs_dropout_prob=args.dropout, num_labels=len(names), id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)}, **overrides)
        return ViTForImageClassification(config)

    def compute_loss(model, batch):
        logits = model(pixel_values=batch["pixel_values"]).logits
        return torch.nn.functional.cross_entropy(logits.float(), batch["labels"], label_smoothing=args.label_smoothing)

    train_transform = images.ImageTransform("cifar", size, mean, std, padding=args.crop_padding, flip=args.flip,
                                            randaug_ops=args.randaug_ops, randaug_magnitude=args.randaug_magnitude)
    return _image_task("vit-pretrain", args, splits, final, image_column, label_column, size, mean, std,
                       train_transform, build_model, (size // args.patch_size) ** 2 + 1, compute_loss,
                       num_labels=len(names))


# --------------------------------------------------------------------------- BERT


def add_bert_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("BERT")
    g.add_argument("--model-name-or-path", default=None,
                   help="a hub id or a local directory (with its tokenizer; default: a ticket's --init-checkpoint, "
                        f"else {BERT_DEFAULT_MODEL})")
    g.add_argument("--task", choices=("squad", "glue"), default="squad")
    g.add_argument("--glue-task", default=None, help="--task glue from the hub's `glue` (e.g. sst2)")
    g.add_argument("--train-file", default=None, help="local training file (SQuAD JSON, or TSV/CSV/JSONL for glue)")
    g.add_argument("--validation-file", default=None, help="glue: local validation file")
    g.add_argument("--test-file", default=None, help="glue: local test file (the final evaluation)")
    g.add_argument("--predict-file", default=None, help="squad: local evaluation file (SQuAD JSON)")
    g.add_argument("--max-seq-length", type=int, default=None, help="default 384 (squad), 128 (glue)")
    g.add_argument("--doc-stride", type=int, default=None,
                   help="squad: overlap of the context windows (default 128, at most a third of --max-seq-length)")
    g.add_argument("--n-best-size", type=int, default=20, help="squad: start/end candidates per window")
    g.add_argument("--max-answer-length", type=int, default=30, help="squad: longest answer, in tokens")


def _check_bert_args(args) -> None:
    if args.task == "squad" and (args.validation_file or args.test_file or args.glue_task):
        raise EarlyBirdError("--validation-file/--test-file/--glue-task go with --task glue; squad uses --predict-file")
    if args.task == "glue" and args.predict_file:
        raise EarlyBirdError("--predict-file goes with --task squad; glue uses --validation-file/--test-file")


def build_bert_task(args, accelerator) -> Task:
    from transformers import AutoTokenizer

    _check_bert_args(args)
    _default_model(args, BERT_DEFAULT_MODEL)
    config = _load_config(args.model_name_or_path, "bert")
    if args.max_seq_length is None:  # the usual default, within what the model can take
        args.max_seq_length = min(384 if args.task == "squad" else 128, config.max_position_embeddings)
    if args.doc_stride is None:
        args.doc_stride = min(128, args.max_seq_length // 3)
    if args.task == "squad" and not 0 < args.doc_stride < args.max_seq_length:
        raise EarlyBirdError(f"--doc-stride must be in 1..{args.max_seq_length - 1}, got {args.doc_stride}")
    if args.max_seq_length > config.max_position_embeddings:
        raise EarlyBirdError(f"--max-seq-length {args.max_seq_length} exceeds the model's "
                             f"max_position_embeddings {config.max_position_embeddings}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(args.model_name_or_path)
    except Exception as err:
        raise EarlyBirdError(f"--model-name-or-path {args.model_name_or_path}: cannot load a tokenizer "
                             f"({' '.join(str(err).split())[:200]})") from None
    if len(tokenizer) > config.vocab_size:
        raise EarlyBirdError(f"--model-name-or-path {args.model_name_or_path}: its tokenizer has {len(tokenizer)} "
                             f"tokens but the model's embeddings hold {config.vocab_size} (config.vocab_size): a "
                             "tokenizer from another model? expected len(tokenizer) <= vocab_size")
    if args.task == "squad":
        return _squad_task(args, accelerator, tokenizer)
    return _glue_task(args, accelerator, tokenizer)


def _glue_task(args, accelerator, tokenizer) -> Task:
    from transformers import BertForSequenceClassification

    files = {"train": args.train_file, "validation": args.validation_file, "test": args.test_file}
    where = f"--train-file {args.train_file}" if args.train_file else f"glue/{args.glue_task}"
    with preparing_data(accelerator, args):
        dd = text.load_classification(args.glue_task, files, cache_dir=args.cache_dir)
        splits, final = common.resolve_splits(dd, "label", where)
        columns = text.pick_text_columns(set(splits["train"].column_names), args.glue_task, where)
        names = images.label_names(splits["train"], "label", where)
        limits = {"train": args.max_train_samples, "validation": args.max_eval_samples, "test": args.max_eval_samples}
        splits = {k: common.subset(v, limits[k]) for k, v in splits.items()}
        common.check_labels(splits, "label", len(names), where)
        tokenized = {k: text.tokenize_classification(v, tokenizer, columns, args.max_seq_length)
                     for k, v in splits.items()}
    collate = text.pad_collator(tokenizer)

    def build_model(overrides):
        return BertForSequenceClassification.from_pretrained(
            args.model_name_or_path, num_labels=len(names), id2label=dict(enumerate(names)),
            label2id={n: i for i, n in enumerate(names)}, ignore_mismatched_sizes=True, **overrides)

    eval_sets = {k: classification_eval_set(text.TokenizedDataset(tokenized[k]), collate) for k in ("validation", "test")}
    return Task(name="bert-glue", model_class=BertForSequenceClassification, build_model=build_model,
                train_dataset=text.TokenizedDataset(tokenized["train"]), collate_fn=collate, eval_sets=eval_sets,
                final_split=final, tokens_per_example=lambda batch: batch["input_ids"].shape[1],
                save_extras=tokenizer.save_pretrained,
                info={"dataset": args.train_file or f"glue/{args.glue_task}", "train_examples": len(tokenized["train"])},
                num_labels=len(names), vocab_size=len(tokenizer))


def _squad_task(args, accelerator, tokenizer) -> Task:
    from transformers import BertForQuestionAnswering, default_data_collator

    if not tokenizer.is_fast:
        raise EarlyBirdError("--task squad needs a fast tokenizer (offset mappings)")
    where = f"--train-file {args.train_file}" if args.train_file else "squad"
    with preparing_data(accelerator, args):
        dd = text.load_squad(args.train_file, args.predict_file, cache_dir=args.cache_dir)
        for name in ("train", "validation"):
            if name not in dd:
                raise EarlyBirdError(f"{where}: no {name!r} split; splits: {', '.join(dd)}")
            text.check_squad_columns(dd[name], where)
        train_examples = common.subset(dd["train"], args.max_train_samples)
        eval_examples = common.subset(dd["validation"], args.max_eval_samples)
        window = dict(tokenizer=tokenizer, max_seq_length=args.max_seq_length, doc_stride=args.doc_stride)
        train_features = train_examples.map(text.prepare_train_features, batched=True, fn_kwargs=window,
                                            remove_columns=train_examples.column_names, desc="train features")
        eval_features = eval_examples.map(text.prepare_validation_features, batched=True, fn_kwargs=window,
                                          remove_columns=eval_examples.column_names, desc="eval features")
    inputs = [c for c in ("input_ids", "token_type_ids", "attention_mask") if c in eval_features.column_names]
    # Postprocessing needs the windows' example ids and offsets, in feature order; the model does not.
    post = {"example_id": eval_features["example_id"], "offset_mapping": eval_features["offset_mapping"]}
    references = [{"id": ex["id"], "answers": ex["answers"]} for ex in eval_examples]
    examples = {"id": eval_examples["id"], "context": eval_examples["context"]}

    def outputs(out, batch):
        return {"start_logits": out.start_logits.float(), "end_logits": out.end_logits.float()}

    def compute(arrays):
        from ..metrics import load_metric

        predictions = text.postprocess_qa_predictions(examples, post, arrays["start_logits"], arrays["end_logits"],
                                                      args.n_best_size, args.max_answer_length)
        return load_metric("squad").compute(
            predictions=[{"id": k, "prediction_text": v} for k, v in predictions.items()], references=references)

    eval_set = EvalSet(text.TokenizedDataset(eval_features, inputs), default_data_collator, outputs, compute)

    def build_model(overrides):
        return BertForQuestionAnswering.from_pretrained(args.model_name_or_path, **overrides)

    return Task(name="bert-squad", model_class=BertForQuestionAnswering, build_model=build_model,
                train_dataset=text.TokenizedDataset(train_features), collate_fn=default_data_collator,
                eval_sets={"validation": eval_set}, final_split="validation",
                tokens_per_example=lambda batch: batch["input_ids"].shape[1], save_extras=tokenizer.save_pretrained,
                info={"dataset": args.train_file or "squad", "train_examples": len(train_examples),
                      "train_features": len(train_features), "eval_examples": len(eval_examples)},
                vocab_size=len(tokenizer))


# --------------------------------------------------------------------------- causal LM (Llama, Qwen3)

CLM_MODEL_TYPES = ("llama", "qwen3")


def add_clm_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("causal language modelling (Llama, Qwen3)")
    g.add_argument("--model-name-or-path", default=None,
                   help="a hub id or a local directory of a pretrained decoder (with its tokenizer)")
    g.add_argument("--config-name", default=None,
                   help="instead: a config (directory or config.json) of a decoder trained from random weights")
    g.add_argument("--tokenizer-name", default=None,
                   help="the tokenizer (default: the one beside --model-name-or-path, or of --config-name's directory)")
    g.add_argument("--train-file", default=None, help="local training text (one example per line)")
    g.add_argument("--validation-file", default=None,
                   help="local validation text (default: the last --validation-split-percentage %% of the training text)")
    g.add_argument("--dataset-name", default=None, help="instead of files: a `datasets` directory or hub id")
    g.add_argument("--text-column", default="text", help="the text column of --dataset-name (default text)")
    g.add_argument("--validation-split-percentage", type=int, default=10,
                   help="held-out share of the training text when there is no validation split (default 10)")
    g.add_argument("--block-size", type=int, default=None,
                   help="tokens per training example, the texts concatenated and cut (default min(1024, the model's "
                        "max_position_embeddings))")


def _clm_source(args) -> tuple[str, str]:
    """(what the model is built from, the flag that named it)."""
    if bool(args.model_name_or_path) == bool(args.config_name):
        raise EarlyBirdError("give one of --model-name-or-path (pretrained weights) and --config-name (random weights)")
    return (args.model_name_or_path, "--model-name-or-path") if args.model_name_or_path else (args.config_name,
                                                                                                "--config-name")


def clm_eval_set(dataset) -> EvalSet:
    """Mean next-token cross-entropy over the evaluation blocks (`loss`, nats per token) and its `perplexity`."""
    from transformers import default_data_collator

    def outputs(out, batch):
        logits = out.logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                                reduction="none", ignore_index=-100).view(labels.shape)
        return {"nll": nll.sum(dim=1), "tokens": (labels != -100).sum(dim=1)}

    def compute(arrays):
        import math

        tokens = float(arrays["tokens"].sum())
        loss = float(arrays["nll"].sum()) / tokens if tokens else 0.0
        return {"loss": loss, "perplexity": math.exp(min(loss, 700.0))}

    return EvalSet(text.TokenizedDataset(dataset), default_data_collator, outputs, compute)


def build_clm_task(args, accelerator) -> Task:
    from transformers import AutoModelForCausalLM, AutoTokenizer, default_data_collator

    source, flag = _clm_source(args)
    config = _load_config(source, CLM_MODEL_TYPES, flag)
    for option in ("slim_before", "soft_by_one"):
        if getattr(args, option, False):
            raise EarlyBirdError(f"--{option.replace('_', '-')} is an option of the ViT/BERT patch; the decoders "
                                 f"({config.model_type}) take --self-slimming and --inter-slimming only")
    tokenizer_path = args.tokenizer_name or (source if args.model_name_or_path else
                                             str(Path(source).parent if Path(source).is_file() else source))
    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_path)
    except Exception as err:
        which = "--tokenizer-name" if args.tokenizer_name else flag
        raise EarlyBirdError(f"{which} {tokenizer_path}: cannot load a tokenizer ({' '.join(str(err).split())[:200]})"
                             ) from None
    if len(tokenizer) > config.vocab_size:
        raise EarlyBirdError(f"{flag} {source}: its tokenizer has {len(tokenizer)} tokens but the model's embeddings "
                             f"hold {config.vocab_size} (config.vocab_size): a tokenizer from another model? expected "
                             "len(tokenizer) <= vocab_size")
    limit = min(1024, config.max_position_embeddings)
    if args.block_size is None:
        args.block_size = limit
    if not 2 <= args.block_size <= config.max_position_embeddings:
        raise EarlyBirdError(f"--block-size must be in 2..{config.max_position_embeddings} (the model's "
                             f"max_position_embeddings), got {args.block_size}")
    if not 0 < args.validation_split_percentage < 100:
        raise EarlyBirdError(f"--validation-split-percentage must be in 1..99, got {args.validation_split_percentage}")
    where = f"--train-file {args.train_file}" if args.train_file else f"--dataset-name {args.dataset_name}"
    with accelerator.main_process_first():
        dd = text.load_text_corpus(args.train_file, args.validation_file, args.dataset_name, cache_dir=args.cache_dir)
        if "train" not in dd:
            raise EarlyBirdError(f"{where}: no 'train' split; splits: {', '.join(dd)}")
        column = "text" if args.train_file else args.text_column
        blocks = {"train": text.tokenize_blocks(dd["train"], tokenizer, column, args.block_size, where)}
        held_out = next((name for name in common.VALIDATION_NAMES if name in dd), None)
        if held_out is not None:
            blocks["validation"] = text.tokenize_blocks(dd[held_out], tokenizer, column, args.block_size,
                                                        f"{where} ({held_out} split)")
        else:  # the last blocks of the training text, in order (no shuffling: neighbouring blocks share a text)
            count = len(blocks["train"])
            held = max(1, count * args.validation_split_percentage // 100)
            if count - held < 1:
                raise EarlyBirdError(f"{where}: {count} block(s) of {args.block_size} tokens cannot be split into "
                                     "training and validation; expected more text or a smaller --block-size")
            blocks["validation"] = blocks["train"].select(range(count - held, count))
            blocks["train"] = blocks["train"].select(range(count - held))
        blocks["train"] = common.subset(blocks["train"], args.max_train_samples)
        blocks["validation"] = common.subset(blocks["validation"], args.max_eval_samples)
    model_class = AutoModelForCausalLM._model_mapping[type(config)]

    def build_model(overrides):
        overrides = {key: value for key, value in overrides.items() if value}  # the switches the decoders have
        if args.model_name_or_path:
            return model_class.from_pretrained(args.model_name_or_path, **overrides)
        for key, value in overrides.items():
            setattr(config, key, value)
        return model_class(config)

    return Task(name="clm", model_class=model_class, build_model=build_model,
                train_dataset=text.TokenizedDataset(blocks["train"]), collate_fn=default_data_collator,
                eval_sets={"validation": clm_eval_set(blocks["validation"])}, final_split="validation",
                tokens_per_example=lambda batch: batch["input_ids"].shape[1], save_extras=tokenizer.save_pretrained,
                info={"dataset": args.train_file or args.dataset_name, "train_blocks": len(blocks["train"]),
                      "validation_blocks": len(blocks["validation"]), "block_size": args.block_size},
                vocab_size=len(tokenizer))
