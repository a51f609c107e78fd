"""`earlybird export`: a drawn ticket for machines where the patch is not installed.

A pruned ticket's `config.json` names its pruned structure (`pruned_heads`, `pruned_intermediate`), which only the
patched modeling files read: plain transformers builds the full-size model and refuses the smaller weights -- or, with
the `ignore_mismatched_sizes=True` its error suggests, silently re-initialises every pruned one. Two ways out:

* `hf`, when the pruned structure is one that transformers' own config can state (`standard_config`: the same sizes in
  every layer -- the same query heads, key/value heads and FFN neurons for Llama/Qwen3, with the head size explicit;
  the same FFN width and no pruned head for ViT/BERT, whose head size derives from the hidden size -- and no softmax
  off by one): a standard checkpoint of the built-in model type, smaller sizes in its config, coefficients folded,
  loaded by any transformers (and any serving stack that reads its configs) without `trust_remote_code`.
* `hf` otherwise: transformers' own convention for architectures it does not ship. The model and config code is saved beside
  the weights and named in `config.json`'s `auto_map`; plain transformers loads it with `trust_remote_code=True`
  (`AutoModelFor...`, `pipeline`). The code is generated from the installed patched modeling and configuration
  modules (see :func:`remote_code`), so it follows the patch wherever the patch changes. The model type is renamed
  (`earlybird_vit`, `earlybird_bert`, `earlybird_llama`, `earlybird_qwen3`): without `trust_remote_code` the auto classes cannot fall back to the built-in
  ViT/BERT and fail with transformers' own "contains custom code" error.
* `onnx`: the graph of torch's exporter (dynamo) with dynamic batch (and sequence, BERT) axes, for onnxruntime. ViT and
  BERT only: a decoder LLM is refused (a causal LM is served with its key/value cache, which this graph would not
  have; export the `hf` checkpoint with the serving stack's own tools).

Either way the slimming coefficients are folded first (the export is a plain pruned model), the exported model is
checked against the patched one on a sample input before anything is committed, and everything is written to a
temporary directory beside OUT, renamed into place at the end: a failure leaves nothing.

Only the standard library and light project modules are imported at module level (the CLI imports this module for
every command); torch, transformers and onnxruntime are imported when an export runs.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import logging
import os
import re
import shutil
import sys
import warnings
from pathlib import Path

from .blocks import BLOCKS, MLP, MSA
from .errors import EarlyBirdError
from .fileio import fsync_dir, fsync_tree
from .layout import FINAL, TICKET, resolve_input

FORMATS = ("hf", "onnx")
MODEL_TYPES = ("vit", "bert", "llama", "qwen3")
DECODER_TYPES = ("llama", "qwen3")  # causal LMs with grouped-query attention
# the patch's config fields: none of them in a standard export
PATCH_FIELDS = ("self_slimming", "inter_slimming", "slim_before", "soft_by_one", "pruned_heads", "pruned_intermediate")
REMOTE_PREFIX = "earlybird_"
ONNX_FILE = "model.onnx"
# The exported model must reproduce the patched one within these (float32): the hf export is the same code on the
# same weights; the ONNX graph is fused and reordered by the exporter and onnxruntime.
ATOL = {"hf": 1e-5, "onnx": 1e-4}


class ExportError(RuntimeError):
    """The export cannot be made faithfully (its outputs differ, its code would not load): a defect of the exporter
    or of the patch, not bad input."""


# --------------------------------------------------------------------------- the ticket


def find_model_dir(path: Path) -> Path:
    """MODEL_DIR itself (a `save_pretrained` folder) or, for a run directory, its model: `final/` (ours) or `ticket/`
    (a Trainer run's), by earlybird.layout.resolve_input."""
    if not path.is_dir():
        raise EarlyBirdError(f"{path}: no such directory; expected a save_pretrained folder (config.json + weights) "
                             f"or a run directory with {FINAL}/ (or a Trainer output directory with {TICKET}/)")
    return resolve_input(path, "model")


def _read_model_type(model_dir: Path) -> str:
    where = model_dir / "config.json"
    try:
        model_type = json.loads(where.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError) as err:
        raise EarlyBirdError(f"{where}: unreadable model config ({err}); expected a JSON object") from None
    if isinstance(model_type, str) and model_type.startswith(REMOTE_PREFIX):
        raise EarlyBirdError(f"{model_dir}: already an `earlybird export` (model type {model_type!r}); "
                             "expected the ticket it was exported from")
    if model_type not in MODEL_TYPES:
        raise EarlyBirdError(f"{where}: a {model_type!r} model; expected a ViT, BERT, Llama or Qwen3 "
                             f"({', '.join(MODEL_TYPES)})")
    return model_type


def load_ticket(model_dir: Path, log=print):
    """The patched model saved in `model_dir`, in eval mode, with any slimming coefficients folded (said in `log`)."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    from .slimming import coefficient_parameters, encoder_layers, fold_slimming

    model_type = _read_model_type(model_dir)
    try:
        config = transformers.AutoConfig.from_pretrained(model_dir)
    except Exception as err:  # noqa: BLE001 -- transformers raises OSError, ValueError, TypeError... for a bad config
        raise EarlyBirdError(f"{model_dir}/config.json: cannot load ({' '.join(str(err).split())[:200]})") from None
    modeling = f"transformers.models.{model_type}.modeling_{model_type}"
    architecture = (config.architectures or [None])[0] or MODEL_MAPPING_NAMES[model_type]
    model_class = getattr(transformers, architecture, None)
    if model_class is None or model_class.__module__ != modeling:
        raise EarlyBirdError(f"{model_dir}/config.json: architecture {architecture!r} is not a class of {modeling}")
    if not hasattr(model_class, "prune_intermediate"):
        raise EarlyBirdError(f"the installed transformers is not patched ({modeling} has no pruning): run `bash setup.sh`")
    try:
        model, info = model_class.from_pretrained(model_dir, output_loading_info=True)
    except Exception as err:  # noqa: BLE001 -- missing or corrupt weights, shapes that do not fit the config
        raise EarlyBirdError(f"{model_dir}: cannot load the weights ({' '.join(str(err).split())[:300]})") from None
    wrong = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
    if wrong:
        what = "; ".join(f"{k.replace('_', ' ')}: {', '.join(map(str, sorted(v)[:3]))}" for k, v in wrong.items())
        raise EarlyBirdError(f"{model_dir}: the weights do not fit its config.json ({what}); expected a complete model")
    model.eval()
    try:
        outputs(model, sample_inputs(config))
    except Exception as err:  # noqa: BLE001 -- e.g. a question-answering head with 3 outputs
        raise EarlyBirdError(f"{model_dir}: the model fails on a sample input ({' '.join(str(err).split())[:200]}); "
                             "expected a model that runs") from None
    coefficients = coefficient_parameters(model)
    if coefficients:
        fold_slimming(model)
        log(f"note: folded {sum(c.numel() for c in coefficients)} slimming coefficients into the adjacent weights "
            "(outputs unchanged; the export is a plain pruned model)")
    if not any(getattr(config, block.plan_key) for block in BLOCKS.values()):
        log(f"note: {model_dir} is not pruned ({len(encoder_layers(model))} full layers); exporting it as it is")
    return model


def describe(model) -> str:
    """`BertForSequenceClassification, 4 layers, heads 3/1/4/2 of 4, neurons 20/37/5/9 of 37` (a decoder adds its
    key/value heads)."""
    from .slimming import kept_sizes

    config, kept = model.config, kept_sizes(model)
    heads, neurons = ("/".join(map(str, kept[block.shape_key])) for block in (MSA, MLP))
    kv = f", key/value heads {'/'.join(map(str, kept['kv_heads']))} of {config.num_key_value_heads}" \
        if "kv_heads" in kept else ""
    return (f"{type(model).__name__}, {config.num_hidden_layers} layers, heads {heads} of "
            f"{config.num_attention_heads}{kv}, neurons {neurons} of {config.intermediate_size}")


def sample_inputs(config, batch: int = 2, seq_len: int = 16, seed: int = 0) -> dict:
    """Random inputs of the model's kind: pixel values (ViT), or token ids with a padded row (and token types, BERT)."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    model_type = config.model_type.removeprefix(REMOTE_PREFIX)
    if model_type == "vit":
        size = config.image_size
        return {"pixel_values": torch.randn(batch, config.num_channels, size, size, generator=gen)}
    seq_len = min(seq_len, config.max_position_embeddings)
    mask = torch.ones(batch, seq_len, dtype=torch.long)
    mask[-1, seq_len // 2:] = 0  # the last row is padded: the mask must reach the attention
    inputs = {"input_ids": torch.randint(0, config.vocab_size, (batch, seq_len), generator=gen), "attention_mask": mask}
    if model_type not in DECODER_TYPES:
        inputs["token_type_ids"] = (torch.arange(seq_len) >= seq_len // 3).long().expand(batch, -1).contiguous()
    return inputs


def outputs(model, inputs: dict) -> dict:
    """The model's named output tensors (logits, start/end logits, hidden states...), detached."""
    import torch

    with torch.no_grad():
        out = model(**inputs, return_dict=True)
    return {name: value.detach() for name, value in out.items() if isinstance(value, torch.Tensor)}


def check_close(expected: dict, got: dict, atol: float, what: str) -> float:
    """The largest absolute difference between two sets of named outputs; ExportError above `atol`."""
    import numpy as np

    if list(expected) != list(got):
        raise ExportError(f"{what} outputs {list(got)}; the patched model's are {list(expected)}")
    worst = 0.0
    for name, value in expected.items():
        value, other = np.asarray(value, dtype=np.float64), np.asarray(got[name], dtype=np.float64)
        if value.shape != other.shape:
            raise ExportError(f"{what} output {name} has shape {other.shape}, the patched model's {value.shape}")
        worst = max(worst, float(np.abs(value - other).max(initial=0.0)))
    if not worst <= atol:
        raise ExportError(f"{what} differs from the patched model by {worst:.3g} (> {atol:g}): the export is wrong; "
                          "nothing was written")
    return worst


# --------------------------------------------------------------------------- hf: remote code


def _patched_modules() -> set[str]:
    from .transformers_patch import TARGETS

    return {"transformers." + target.removesuffix(".py").replace("/", ".") for target in TARGETS}


def _absolute_imports(source: str, package: str, renamed: dict[str, str]) -> str:
    """`from ...x import y` -> `from transformers.x import y`; a module in `renamed` (a sibling file of the export)
    stays relative, under its new name, so transformers' dynamic-module loader copies it along. An import from another
    patched module is refused: plain transformers has only its unpatched version."""
    lines = source.splitlines(keepends=True)
    prefix = re.compile(r"from\s+[\w.]+\s+import\b")
    patched = _patched_modules()
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.ImportFrom):
            continue
        base = package.rsplit(".", node.level - 1)[0] if node.level else ""
        target = ".".join(part for part in (base, node.module) if part)
        if target in renamed:
            new = f".{renamed[target]}"
        elif target in patched:
            raise ExportError(f"{package}: line {node.lineno} imports from {target}, whose patched version plain "
                              "transformers lacks; the export ships only the model's own modeling and configuration")
        elif node.level:
            new = target
        else:
            continue
        line = lines[node.lineno - 1]
        match = prefix.match(line, node.col_offset)
        if match is None:
            raise ExportError(f"{package}: cannot rewrite the import on line {node.lineno}: {line.strip()}")
        lines[node.lineno - 1] = f"{line[:node.col_offset]}from {new} import{line[match.end():]}"
    return "".join(lines)


def _rename_model_type(source: str, old: str, new: str) -> str:
    """The configuration class's `model_type = "<old>"` becomes `"<new>"`."""
    lines = source.splitlines(keepends=True)
    found = 0
    for node in ast.walk(ast.parse(source)):
        if (isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["model_type"]
                and isinstance(node.value, ast.Constant) and node.value.value == old):
            value = node.value
            line = lines[value.lineno - 1]
            lines[value.lineno - 1] = f"{line[:value.col_offset]}{json.dumps(new)}{line[value.end_col_offset:]}"
            found += 1
    if found != 1:
        raise ExportError(f"expected one `model_type = {old!r}` in the configuration module, found {found}")
    return "".join(lines)


def remote_model_type(model_type: str) -> str:
    return REMOTE_PREFIX + model_type


def remote_code(model) -> dict[str, str]:
    """{file name: source} of the model's patched modeling and configuration modules, made loadable as remote code.

    Derived from the modules that define the model's classes (whatever the patch holds today): relative imports
    become `transformers.` imports, except modeling -> configuration, which stays relative (both files travel with
    the weights); the configuration's `model_type` gets the `earlybird_` prefix. Everything else is untouched.
    """
    import transformers

    model_type = model.config.model_type
    remote_type = remote_model_type(model_type)
    modules = {"configuration": sys.modules[type(model.config).__module__], "modeling": sys.modules[type(model).__module__]}
    renamed = {module.__name__: f"{kind}_{remote_type}" for kind, module in modules.items()}
    files = {}
    for kind, module in modules.items():
        source = _absolute_imports(Path(module.__file__).read_text(), module.__package__, renamed)
        if kind == "configuration":
            source = _rename_model_type(source, model_type, remote_type)
        header = (
            f"# Generated by `earlybird export` from {module.__name__} (transformers {transformers.__version__} with the\n"
            f"# earlybird patch: structured pruning, network slimming, softmax off by one). Changes: relative imports\n"
            f"# made absolute and model_type {remote_type!r}, so that plain transformers loads this model only with\n"
            f"# trust_remote_code=True (config.json's auto_map names the classes), never as its built-in {model_type}.\n"
        )
        files[f"{renamed[module.__name__]}.py"] = header + source
    return files


def auto_classes(model_type: str, class_name: str) -> dict[str, str]:
    """{auto class name: built-in class name}: AutoModel (the bare model) and the auto classes of `class_name`."""
    from transformers.models.auto import modeling_auto
    from transformers.models.auto.auto_factory import _BaseAutoModelClass

    entries = {}
    for name in sorted(dir(modeling_auto)):
        auto = getattr(modeling_auto, name)
        if not (isinstance(auto, type) and issubclass(auto, _BaseAutoModelClass) and auto._model_mapping is not None):
            continue
        # the auto class's own table of built-in models: model type -> class name
        built_in = auto._model_mapping._model_mapping.get(model_type)
        if name == "AutoModel" or built_in == class_name:
            entries[name] = built_in
    return entries


def auto_map(model) -> dict[str, str]:
    """config.json's `auto_map`: AutoConfig, AutoModel (the bare encoder) and the auto classes of the model's task."""
    model_type = model.config.model_type
    modeling = f"modeling_{remote_model_type(model_type)}"
    entries = {"AutoConfig": f"configuration_{remote_model_type(model_type)}.{type(model.config).__name__}"}
    classes = auto_classes(model_type, type(model).__name__)
    entries.update({name: f"{modeling}.{built_in}" for name, built_in in classes.items()})
    return entries


def standard_config(model, log=print):
    """The (folded) model's config as transformers' own, with the smaller sizes, when its pruned structure is one a
    built-in config states (see the module's docstring); None, said in `log`, when it needs the patch's code."""
    from .slimming import kept_sizes

    config, kept = model.config, kept_sizes(model)
    why = None
    if getattr(config, "soft_by_one", False):
        why = "softmax off by one"
    elif len(set(kept[MLP.shape_key])) != 1:
        why = "FFN widths differ across layers"
    elif config.model_type in DECODER_TYPES and len({*zip(kept[MSA.shape_key], kept["kv_heads"])}) != 1:
        why = "query / key-value head counts differ across layers"
    elif config.model_type not in DECODER_TYPES and set(kept[MSA.shape_key]) != {config.num_attention_heads}:
        why = "pruned heads (the head size derives from the hidden size)"
    if why is None:
        sizes = {"intermediate_size": kept[MLP.shape_key][0]}
        if config.model_type in DECODER_TYPES:
            sizes.update(num_attention_heads=kept[MSA.shape_key][0], num_key_value_heads=kept["kv_heads"][0],
                         head_dim=config.head_dim)
        fields = {k: v for k, v in config.to_dict().items() if k not in PATCH_FIELDS}
        try:
            return type(config).from_dict({**fields, **sizes})
        except Exception as err:  # noqa: BLE001 -- the config's own validation, e.g. hidden size % heads
            why = f"{type(config).__name__} refuses these sizes: {' '.join(str(err).split())[:160]}"
    log(f"note: custom-code export (loads with trust_remote_code=True): {why}")
    return None


def task_auto_class(config_dict: dict) -> str:
    """The auto class that loads the export's own architecture (from its auto_map, or, for a standard checkpoint, from
    transformers' own tables)."""
    architecture = config_dict["architectures"][0]
    if "auto_map" not in config_dict:
        found = [name for name, cls in auto_classes(config_dict["model_type"], architecture).items()
                 if cls == architecture]
        if found:
            return found[0]
        raise ExportError(f"no auto class of transformers loads {architecture}")
    for name, target in config_dict["auto_map"].items():
        if name != "AutoConfig" and target.endswith(f".{architecture}"):
            return name
    raise ExportError(f"auto_map names no auto class for {architecture}")


# What a ticket folder holds for `pipeline(...)`: any of these files means it has one (transformers would otherwise
# make an empty tokenizer out of nothing).
PREPROCESSING = {"vit": ("image processor", ("preprocessor_config.json",)),
                 "bert": ("tokenizer", ("tokenizer_config.json", "tokenizer.json", "vocab.txt")),
                 **{decoder: ("tokenizer", ("tokenizer_config.json", "tokenizer.json", "tokenizer.model"))
                    for decoder in DECODER_TYPES}}


def load_preprocessing(model_dir: Path, log=print):
    """The ticket's tokenizer (BERT) or image processor (ViT), saved into the export for `pipeline(...)`; None (said
    in `log`) when the folder has none."""
    import transformers

    model_type = _read_model_type(model_dir)
    kind, files = PREPROCESSING[model_type]
    if not any((model_dir / name).is_file() for name in files):
        log(f"note: {model_dir} has no {kind} ({', '.join(files)}); the export has none either: give pipeline(...) one")
        return None
    auto = transformers.AutoImageProcessor if model_type == "vit" else transformers.AutoTokenizer
    try:
        return auto.from_pretrained(model_dir)
    except Exception as err:  # noqa: BLE001 -- transformers raises many kinds for a broken file
        raise EarlyBirdError(f"{model_dir}: its {kind} cannot be loaded ({' '.join(str(err).split())[:200]}); "
                             f"expected a working one or none") from None


def export_hf(model, processor, out: Path, log=print) -> float:
    """A standard checkpoint (`standard_config`), or weights, config.json with `auto_map` and the generated code; and
    the tokenizer / image processor, into `out`.

    Loads `out` back through its auto class (with `trust_remote_code=True` for custom code) and returns the largest
    difference of its outputs from the patched model's.
    """
    import transformers

    standard = standard_config(model, log)
    if standard is not None:
        model.save_pretrained(out)
        # over the patched config.json: the built-in type, the smaller sizes, and none of the patch's fields (the
        # patched config class writes them at their defaults)
        fields = {k: v for k, v in json.loads(standard.to_json_string()).items() if k not in PATCH_FIELDS}
        (out / "config.json").write_text(json.dumps(fields, indent=2, sort_keys=True) + "\n")
        if processor is not None:
            processor.save_pretrained(out)
        log(f"note: a standard {type(standard).__name__} checkpoint: any transformers loads it without "
            "trust_remote_code")
        auto = getattr(transformers, task_auto_class(json.loads((out / "config.json").read_text())))
        exported = auto.from_pretrained(out).eval()
        inputs = sample_inputs(model.config)
        return check_close(outputs(model, inputs), outputs(exported, inputs), ATOL["hf"], f"{out} (reloaded)")

    # The weights under the modules' own names: transformers saves its built-in ViT under the legacy checkpoint names
    # by default and renames them back on load, which it never does for remote code. The patched config keeps the
    # pruned structure: the per-layer sizes come from it.
    model.save_pretrained(out, save_original_format=False)
    for name, source in remote_code(model).items():
        (out / name).write_text(source)
    config_path = out / "config.json"
    config = json.loads(config_path.read_text())
    config["model_type"] = remote_model_type(model.config.model_type)
    config["auto_map"] = auto_map(model)
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if processor is not None:
        processor.save_pretrained(out)

    auto = getattr(transformers, task_auto_class(config))
    exported = auto.from_pretrained(out, trust_remote_code=True).eval()
    inputs = sample_inputs(model.config)
    return check_close(outputs(model, inputs), outputs(exported, inputs), ATOL["hf"], f"{out} (reloaded)")


# --------------------------------------------------------------------------- onnx


def onnx_io_names(model) -> tuple[list[str], list[str]]:
    """The graph's input names (the model's kind) and output names (what the model returns, in order)."""
    inputs = sample_inputs(model.config)
    return list(inputs), list(outputs(model, inputs))


def export_onnx(model, processor, out: Path, log=print) -> float:
    """`model.onnx` (dynamic batch, and sequence for BERT), config.json and the tokenizer / image processor into `out`.

    Runs the graph under onnxruntime on a sample (another batch size and length than the export's) and returns the
    largest difference from PyTorch's outputs.
    """
    import onnxruntime
    import torch

    input_names, output_names = onnx_io_names(model)

    class Positional(torch.nn.Module):
        """The model with positional inputs and a tuple of outputs, in the graph's order."""

        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *args):
            out = self.model(**dict(zip(input_names, args)), return_dict=True)
            return tuple(out[name] for name in output_names)

    example = sample_inputs(model.config, batch=2, seq_len=16)
    batch = torch.export.Dim("batch", min=1)
    dims = {0: batch}
    if model.config.model_type == "bert":
        dims[1] = torch.export.Dim("sequence", min=1, max=model.config.max_position_embeddings)
    path = out / ONNX_FILE
    # One self-contained file unless the weights exceed protobuf's 2 GB limit (then beside it, model.onnx.data).
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    torch.onnx.export(Positional().eval(), tuple(example.values()), str(path), dynamo=True,
                      external_data=weight_bytes > 1.8e9,
                      input_names=input_names, output_names=output_names,
                      dynamic_shapes=(tuple(dims for _ in input_names),), verbose=False, report=False)
    model.config.save_pretrained(out)  # labels (id2label) and sizes, for the user's pre- and post-processing
    if processor is not None:
        processor.save_pretrained(out)

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    check = sample_inputs(model.config, batch=3, seq_len=11, seed=1)
    got = session.run(output_names, {name: value.numpy() for name, value in check.items()})
    return check_close(outputs(model, check), dict(zip(output_names, got)), ATOL["onnx"], f"{path} (onnxruntime)")


EXPORTERS = {"hf": export_hf, "onnx": export_onnx}


# --------------------------------------------------------------------------- the command


def export(model_dir, out, fmt: str, log=print) -> tuple[Path, str]:
    """Export the ticket in `model_dir` (or a run's final/) to the new directory `out`; returns (out, summary)."""
    if fmt not in FORMATS:
        raise EarlyBirdError(f"--format {fmt!r}; expected one of {', '.join(FORMATS)}")
    out = Path(out)
    if out.exists() or out.is_symlink():
        raise EarlyBirdError(f"{out}: already exists; expected a new path (an export is never merged into a folder)")
    if not out.parent.is_dir():
        raise EarlyBirdError(f"{out}: its parent {out.parent} is not a directory; expected a path in an existing one")
    source = find_model_dir(Path(model_dir))
    if fmt == "onnx" and _read_model_type(source) in DECODER_TYPES:
        raise EarlyBirdError(f"{source}: --format onnx exports ViT and BERT only; a {_read_model_type(source)} "
                             "decoder is served with its key/value cache: expected --format hf")
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
    except OSError as err:
        raise EarlyBirdError(f"{out.parent}: cannot write there ({err.strerror}); expected a writable directory") from None
    try:
        processor = load_preprocessing(source, log)
        model = load_ticket(source, log)
        difference = EXPORTERS[fmt](model, processor, tmp, log)
        fsync_tree(tmp)  # on disk before the rename makes it visible
        if out.exists():
            raise EarlyBirdError(f"{out}: appeared while exporting; expected a new path. Nothing was written")
        os.rename(tmp, out)
        fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    return out, (f"wrote {out} ({fmt}, {size:.1f} MB): {describe(model)}; outputs equal the patched model's "
                 f"(max |diff| {difference:.1e} <= {ATOL[fmt]:g})")


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model_dir", metavar="MODEL_DIR",
                   help="a pruned ticket (save_pretrained folder) or a run directory (its final/ is taken)")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="new directory to write (must not exist)")
    p.add_argument("--format", choices=FORMATS, default="hf",
                   help="hf: transformers folder loaded with trust_remote_code=True (default); onnx: ONNX graph")


@contextlib.contextmanager
def quiet_libraries():
    """transformers' progress bars and load reports, the ONNX exporter's warnings: the command says what matters."""
    import torch  # noqa: F401 -- first: importing torch resets its loggers' levels
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    onnx_logger = logging.getLogger("torch.onnx")
    onnx_level = onnx_logger.level
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
            yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        onnx_logger.setLevel(onnx_level)


def run_export(args) -> int:
    try:
        with quiet_libraries():
            _, summary = export(args.model_dir, args.output, args.format, log=lambda line: print(line, file=sys.stderr))
    except ExportError as err:
        print(f"earlybird: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 1
    print(summary)
    return 0
