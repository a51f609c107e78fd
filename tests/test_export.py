"""`earlybird export`: a pruned ticket that runs where the patch is not installed.

The equivalences: the `hf` export loaded by an *unpatched* transformers 5.23.0 (a subprocess with the pristine files
first on PYTHONPATH) gives the patched model's outputs, through `AutoModelFor...` and `pipeline(...)`; the `onnx`
export under onnxruntime gives PyTorch's outputs at other batch sizes and lengths than it was exported with. And the
failures: without `trust_remote_code` plain transformers refuses the export (never re-initialised weights), bad input
exits 2 naming the path, and a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoModel,
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertModel,
    BertTokenizer,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
    pipeline,
)
from transformers.models.vit import ViTImageProcessorPil

from earlybird import cli, transformers_patch
from earlybird import export as export_module
from earlybird.slimming import apply_plan, fold_slimming

ATOL_HF, ATOL_ONNX = 1e-5, 1e-4
LAYERS, HEADS, HIDDEN, INTER = 3, 4, 32, 37
# Uneven per-layer sizes, as a global-scope ticket has: layer 1 keeps every head, layer 0 keeps 7 of 37 neurons.
PLAN = {"pruned_heads": {"0": [1, 2], "2": [0]}, "pruned_intermediate": {"0": list(range(30)), "1": [3, 4]}}
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "good", "bad", "film", "was", "not", "very", "it"]
TEXTS = ["the film was very good", "it was not a good film at all"]

# name: model class, pipeline task (None: transformers 5 has no question-answering pipeline), extra config flags,
# whether the ticket is saved already folded, whether it is given as a run directory (its final/ is exported)
CASES = {
    "vit-classifier": dict(cls=ViTForImageClassification, task="image-classification", run_dir=True),
    "vit-encoder": dict(cls=ViTModel, task="image-feature-extraction", folded=True),
    "bert-classifier": dict(cls=BertForSequenceClassification, task="text-classification",
                            flags=dict(soft_by_one=True, slim_before=True)),
    "bert-qa": dict(cls=BertForQuestionAnswering, task=None),
    "bert-encoder": dict(cls=BertModel, task="feature-extraction", folded=True),
}


def kind(name: str) -> str:
    return name.split("-")[0]


def make_config(model: str, **flags):
    common = dict(hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS, intermediate_size=INTER,
                  self_slimming=True, inter_slimming=True, **flags)
    if model == "vit":
        return ViTConfig(image_size=16, patch_size=4, num_labels=3, **common)
    return BertConfig(vocab_size=60, max_position_embeddings=32, num_labels=2, **common)


def make_inputs(model: str, batch: int, seq_len: int = 9, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    if model == "vit":
        return {"pixel_values": torch.randn(batch, 3, 16, 16, generator=gen)}
    mask = torch.ones(batch, seq_len, dtype=torch.long)
    mask[-1, seq_len // 2:] = 0
    return {"input_ids": torch.randint(0, 60, (batch, seq_len), generator=gen), "attention_mask": mask,
            "token_type_ids": (torch.arange(seq_len) > seq_len // 3).long().expand(batch, -1).contiguous()}


def named_outputs(model, inputs) -> dict:
    with torch.no_grad():
        out = model(**inputs, return_dict=True)
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


def assert_close(expected: dict, got: dict, atol: float):
    assert list(expected) == list(got)
    for name, value in expected.items():
        np.testing.assert_allclose(np.asarray(got[name]), value.numpy(), rtol=0, atol=atol, err_msg=name)


def images(n: int = 2) -> list:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (20 + 3 * i, 18, 3), dtype=np.uint8)) for i in range(n)]


def save_ticket(name: str, where: Path) -> Path:
    """A pruned ticket saved the project's way (random coefficients, pruned unevenly, folded or not) with its
    tokenizer / image processor; returns the directory to give `earlybird export`."""
    spec = CASES[name]
    torch.manual_seed(0)
    model = spec["cls"](make_config(kind(name), **spec.get("flags", {}))).eval()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param_name, param in model.named_parameters():
            if param_name.endswith("slimming_coef"):
                param.copy_(torch.rand(param.shape, generator=gen) * 1.5 + 0.1)
    apply_plan(model, PLAN)
    if spec.get("folded"):
        fold_slimming(model)
    model_dir = where / name / "final" if spec.get("run_dir") else where / name
    model.save_pretrained(model_dir)
    if kind(name) == "vit":
        ViTImageProcessorPil(size={"height": 16, "width": 16}).save_pretrained(model_dir)
    else:
        vocab = where / "vocab.txt"
        vocab.write_text("\n".join(WORDS) + "\n")
        BertTokenizer(str(vocab)).save_pretrained(model_dir)
    return where / name


def ticket_model_dir(ticket: Path) -> Path:
    return ticket / "final" if (ticket / "final").is_dir() else ticket


def run_cli(*argv) -> tuple[int, str, str]:
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def pipeline_inputs(name: str):
    return images() if kind(name) == "vit" else TEXTS


def call_kwargs(task: str) -> dict:
    return {"top_k": None} if task.endswith("classification") else {}  # every label's score, not the top one


def pipeline_result(task: str, model: str, name: str):
    result = pipeline(task, model=model)(pipeline_inputs(name), **call_kwargs(task))
    return json.loads(json.dumps(result, default=lambda x: np.asarray(x).tolist()))


def pipeline_values(task: str, result) -> np.ndarray:
    """Features as they are; classification scores sorted by label."""
    if not task.endswith("classification"):  # one (1, tokens, hidden) array per input, of its own length
        return np.concatenate([np.ravel(np.asarray(item, dtype=float)) for item in result])
    return np.asarray([[r["score"] for r in sorted(item, key=lambda r: r["label"])] for item in result])


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tickets(tmp_path_factory) -> dict:
    where = tmp_path_factory.mktemp("tickets")
    return {name: save_ticket(name, where) for name in CASES}


@pytest.fixture(scope="module")
def hf_exports(tickets, tmp_path_factory) -> dict:
    where = tmp_path_factory.mktemp("exports")
    out = {}
    for name, ticket in tickets.items():
        code, stdout, stderr = run_cli("export", ticket, "-o", where / name, "--format", "hf")
        assert code == 0, stderr
        assert stdout.startswith(f"wrote {where / name} (hf")
        out[name] = where / name
    return out


@pytest.fixture(scope="module")
def expected(tickets) -> dict:
    """The patched model's outputs: the ticket loaded by the patched transformers, as saved (coefficients unfolded)."""
    out = {}
    for name, ticket in tickets.items():
        model = CASES[name]["cls"].from_pretrained(ticket_model_dir(ticket)).eval()
        out[name] = named_outputs(model, make_inputs(kind(name), batch=3))
    return out


@pytest.fixture(scope="session")
def unpatched_site(tmp_path_factory, pristine_dir) -> Path:
    """A folder to put first on PYTHONPATH: the installed transformers with its patched files back to pristine.

    Made of symlinks: only the folders on the way to a patched file are real, every other entry links to the
    installed package, and the patched files are copies of the pristine ones `setup.sh` kept. Costs nothing.
    """
    package = transformers_patch.installed_transformers_dir()
    targets = {p.relative_to(pristine_dir) for p in pristine_dir.rglob("*.py")}
    real_dirs = {parent for target in targets for parent in target.parents}
    site = tmp_path_factory.mktemp("unpatched-site")
    root = site / "transformers"

    def build(rel: Path):
        (root / rel).mkdir()
        for entry in (package / rel).iterdir():
            if entry.name.startswith(".earlybird") or entry.name == "__pycache__":
                continue
            if rel / entry.name in targets:
                shutil.copy2(pristine_dir / rel / entry.name, root / rel / entry.name)
            elif rel / entry.name in real_dirs:
                build(rel / entry.name)
            else:
                (root / rel / entry.name).symlink_to(entry)

    build(Path())
    assert transformers_patch.overall_state(root)[0] == "pristine"
    return site


# What the unpatched interpreter does with each export: its outputs through the auto class (trust_remote_code), its
# pipeline, and the errors without trust_remote_code; and, for one ticket itself, what plain transformers makes of it.
PLAIN_SCRIPT = textwrap.dedent("""
    import json, sys, traceback
    import numpy as np, torch, transformers
    from PIL import Image
    from transformers.models.vit import modeling_vit

    job = json.load(open(sys.argv[1]))
    report = {"transformers_file": transformers.__file__, "patched": hasattr(modeling_vit.ViTMLP, "prune_intermediate")}

    def error(call):
        try:
            call()
        except Exception as err:
            return f"{type(err).__name__}: {err}"
        return None

    def named_outputs(model, inputs):
        with torch.no_grad():
            out = model(**inputs, return_dict=True)
        return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}

    for case in job["cases"]:
        auto = getattr(transformers, case["auto"])
        inputs = torch.load(case["inputs"])
        model = auto.from_pretrained(case["export"], trust_remote_code=True).eval()
        result = {"class": f"{type(model).__module__}.{type(model).__name__}", "outputs": named_outputs(model, inputs)}
        result["no_trust"] = {
            "auto": error(lambda: auto.from_pretrained(case["export"])),
            "auto_false": error(lambda: auto.from_pretrained(case["export"], trust_remote_code=False)),
        }
        if case["task"]:
            rng = np.random.default_rng(0)
            data = ([Image.fromarray(rng.integers(0, 255, (20 + 3 * i, 18, 3), dtype=np.uint8)) for i in range(2)]
                    if case["kind"] == "vit" else case["texts"])
            run = transformers.pipeline(case["task"], model=case["export"], trust_remote_code=True)(data, **case["call"])
            result["pipeline"] = json.loads(json.dumps(run, default=lambda x: np.asarray(x).tolist()))
            result["no_trust"]["pipeline"] = error(lambda: transformers.pipeline(case["task"], model=case["export"]))
        report[case["name"]] = result

    counter = job["counterfactual"]
    cls = getattr(transformers, counter["class"])
    report["ticket_strict"] = error(lambda: cls.from_pretrained(counter["ticket"]))
    model = cls.from_pretrained(counter["ticket"], ignore_mismatched_sizes=True).eval()
    report["ticket_ignore_outputs"] = named_outputs(model, torch.load(counter["inputs"]))
    torch.save(report, job["report"])
""")


@pytest.fixture(scope="module")
def unpatched(hf_exports, tickets, unpatched_site, tmp_path_factory) -> dict:
    """Run PLAIN_SCRIPT once over every export in a subprocess whose transformers is the pristine 5.23.0."""
    work = tmp_path_factory.mktemp("unpatched-run")
    cases = []
    for name, out in hf_exports.items():
        torch.save(make_inputs(kind(name), batch=3), work / f"{name}.pt")
        config = json.loads((out / "config.json").read_text())
        cases.append(dict(name=name, export=str(out), inputs=str(work / f"{name}.pt"), task=CASES[name]["task"],
                          kind=kind(name), texts=TEXTS, auto=export_module.task_auto_class(config),
                          call=call_kwargs(CASES[name]["task"] or "")))
    counterfactual = {"ticket": str(ticket_model_dir(tickets["vit-classifier"])), "class": "ViTForImageClassification",
                      "inputs": str(work / "vit-classifier.pt")}
    job = dict(cases=cases, counterfactual=counterfactual, report=str(work / "report.pt"))
    (work / "job.json").write_text(json.dumps(job))
    (work / "plain.py").write_text(PLAIN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(unpatched_site), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
           "HF_MODULES_CACHE": str(work / "modules"), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, str(work / "plain.py"), str(work / "job.json")], env=env, cwd=work,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(work / "report.pt")


# --------------------------------------------------------------------------- hf: plain transformers


def test_the_subprocess_runs_an_unpatched_transformers(unpatched, unpatched_site):
    assert unpatched["transformers_file"].startswith(str(unpatched_site))
    assert unpatched["patched"] is False


def test_plain_transformers_cannot_use_the_ticket_itself(unpatched, expected):
    """The problem the export solves: the ticket's weights do not fit plain ViT, and `ignore_mismatched_sizes=True`
    re-initialises them (outputs nothing like the ticket's)."""
    assert "size mismatch" in unpatched["ticket_strict"].lower() or "mismatch" in unpatched["ticket_strict"]
    garbage = unpatched["ticket_ignore_outputs"]["logits"]
    assert (garbage - expected["vit-classifier"]["logits"]).abs().max() > 1e-2


@pytest.mark.parametrize("name", list(CASES))
def test_unpatched_transformers_loads_the_export_with_the_patched_outputs(name, unpatched, expected):
    result = unpatched[name]
    assert result["class"].startswith("transformers_modules.")  # the export's own code, not a built-in class
    assert_close(expected[name], result["outputs"], ATOL_HF)


@pytest.mark.parametrize("name", [n for n, spec in CASES.items() if spec["task"]])
def test_unpatched_pipeline_equals_the_patched_pipeline_on_the_ticket(name, unpatched, tickets):
    task = CASES[name]["task"]
    want = pipeline_result(task, str(ticket_model_dir(tickets[name])), name)
    got = unpatched[name]["pipeline"]
    assert pipeline_values(task, got).shape == pipeline_values(task, want).shape
    np.testing.assert_allclose(pipeline_values(task, got), pipeline_values(task, want), rtol=0, atol=ATOL_HF)


@pytest.mark.parametrize("name", list(CASES))
def test_without_trust_remote_code_plain_transformers_refuses_the_export(name, unpatched):
    errors = unpatched[name]["no_trust"]
    for how, message in errors.items():
        assert message is not None, f"{how}: loaded without trust_remote_code"
        assert "trust_remote_code=True" in message, f"{how}: {message}"


# --------------------------------------------------------------------------- hf: the patched transformers


@pytest.mark.parametrize("name", ["vit-classifier", "bert-classifier"])
def test_the_patched_transformers_loads_the_export_too(name, hf_exports, expected):
    import transformers

    out = hf_exports[name]
    auto = getattr(transformers, export_module.task_auto_class(json.loads((out / "config.json").read_text())))
    inputs = make_inputs(kind(name), batch=3)
    assert_close(expected[name], named_outputs(auto.from_pretrained(out, trust_remote_code=True).eval(), inputs),
                 ATOL_HF)
    built_in = CASES[name]["cls"].from_pretrained(out).eval()  # the config holds the pruned structure
    assert_close(expected[name], named_outputs(built_in, inputs), ATOL_HF)


def test_the_remote_code_is_the_patched_modules_with_only_imports_and_model_type_changed(hf_exports):
    from transformers.models.bert import configuration_bert, modeling_bert

    out = hf_exports["bert-classifier"]
    for module, generated in ((modeling_bert, "modeling_earlybird_bert.py"),
                              (configuration_bert, "configuration_earlybird_bert.py")):
        original = Path(module.__file__).read_text().splitlines()
        lines = (out / generated).read_text().splitlines()
        header = lines[: len(lines) - len(original)]
        assert header and all(line.startswith("# ") for line in header)
        changed = [(a, b) for a, b in zip(original, lines[len(header):]) if a != b]
        assert changed, "no import was rewritten"
        for old, new in changed:
            assert (old.startswith("from .") and new.startswith(("from transformers", "from .configuration_earlybird_"))
                    or (old.strip(), new.strip()) == ('model_type = "bert"', 'model_type = "earlybird_bert"')), (old, new)


def test_imports_are_rewritten_and_an_import_of_another_patched_module_is_refused():
    source = textwrap.dedent("""\
        from ... import initialization as init
        from ...modeling_outputs import (
            BaseModelOutput,
        )
        from .configuration_vit import ViTConfig


        def f():
            from ...integrations import something
        """)
    renamed = {"transformers.models.vit.configuration_vit": "configuration_earlybird_vit"}
    got = export_module._absolute_imports(source, "transformers.models.vit", renamed)
    assert got == textwrap.dedent("""\
        from transformers import initialization as init
        from transformers.modeling_outputs import (
            BaseModelOutput,
        )
        from .configuration_earlybird_vit import ViTConfig


        def f():
            from transformers.integrations import something
        """)
    with pytest.raises(export_module.ExportError, match="transformers.models.bert.modeling_bert"):
        export_module._absolute_imports("from ..bert.modeling_bert import x\n", "transformers.models.vit", renamed)


def test_an_unpruned_model_is_exported_as_it_is_with_a_note(tmp_path):
    model = BertModel(make_config("bert"))
    model.save_pretrained(tmp_path / "dense")
    code, stdout, stderr = run_cli("export", tmp_path / "dense", "-o", tmp_path / "out")
    assert code == 0, stderr
    assert "not pruned" in stderr and f"folded {LAYERS * (HEADS + INTER)} slimming coefficients" in stderr
    assert "has no tokenizer" in stderr and not (tmp_path / "out" / "tokenizer.json").exists()
    reloaded = AutoModel.from_pretrained(tmp_path / "out", trust_remote_code=True).eval()
    inputs = make_inputs("bert", batch=2)
    fold_slimming(model.eval())
    assert_close(named_outputs(model, inputs), named_outputs(reloaded, inputs), ATOL_HF)


# --------------------------------------------------------------------------- onnx


@pytest.mark.parametrize("name", ["vit-classifier", "bert-classifier"])
def test_onnxruntime_equals_pytorch_at_other_batch_sizes_and_lengths(name, tickets, expected, tmp_path):
    import onnxruntime

    out = tmp_path / "onnx"
    code, stdout, stderr = run_cli("export", tickets[name], "-o", out, "--format", "onnx")
    assert code == 0, stderr
    assert {"model.onnx", "config.json"} <= {p.name for p in out.iterdir()}
    assert (out / ("preprocessor_config.json" if kind(name) == "vit" else "tokenizer.json")).is_file()
    model = CASES[name]["cls"].from_pretrained(ticket_model_dir(tickets[name])).eval()
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    shapes = [(1, 5), (4, 23)] if kind(name) == "bert" else [(1, None), (4, None)]
    for batch, seq_len in shapes:
        inputs = make_inputs(kind(name), batch, seq_len or 9, seed=batch)
        got = session.run(names, {k: v.numpy() for k, v in inputs.items()})
        assert_close(named_outputs(model, inputs), dict(zip(names, got)), ATOL_ONNX)


# --------------------------------------------------------------------------- bad input, failures


def _not_a_model(tmp_path, tickets):
    (tmp_path / "empty").mkdir()
    return tmp_path / "empty", tmp_path / "out"


def _gpt2(tmp_path, tickets):
    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    return tmp_path / "gpt2", tmp_path / "out"


def _an_export(tmp_path, tickets):
    code, _, stderr = run_cli("export", tickets["bert-qa"], "-o", tmp_path / "exported")
    assert code == 0, stderr
    return tmp_path / "exported", tmp_path / "out"


def _truncated_weights(tmp_path, tickets):
    shutil.copytree(tickets["bert-qa"], tmp_path / "ticket")
    weights = tmp_path / "ticket" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:5000])
    return tmp_path / "ticket", tmp_path / "out"


def _config_without_the_pruned_structure(tmp_path, tickets):
    shutil.copytree(tickets["bert-qa"], tmp_path / "ticket")
    config = json.loads((tmp_path / "ticket" / "config.json").read_text())
    config.pop("pruned_heads")
    (tmp_path / "ticket" / "config.json").write_text(json.dumps(config))
    return tmp_path / "ticket", tmp_path / "out"


def _broken_tokenizer(tmp_path, tickets):
    shutil.copytree(tickets["bert-qa"], tmp_path / "ticket")
    (tmp_path / "ticket" / "tokenizer.json").write_text("{not json")
    return tmp_path / "ticket", tmp_path / "out"


def _out_exists(tmp_path, tickets):
    (tmp_path / "out").mkdir()
    return tickets["bert-qa"], tmp_path / "out"


BAD_INPUTS = {
    "MODEL_DIR does not exist": (lambda tmp_path, tickets: (tmp_path / "nowhere", tmp_path / "out"),
                                 "nowhere: no such directory"),
    "MODEL_DIR is not a model": (_not_a_model, "empty: not a model (no config.json, nor final/config.json)"),
    "another architecture": (_gpt2, "a 'gpt2' model; expected a ViT, BERT, Llama or Qwen3"),
    "an export given as the ticket": (_an_export, "already an `earlybird export`"),
    "truncated weights": (_truncated_weights, "ticket: cannot load the weights"),
    "config.json without the pruned structure": (_config_without_the_pruned_structure,
                                                 "ticket: cannot load the weights"),
    "a broken tokenizer": (_broken_tokenizer, "ticket: its tokenizer cannot be loaded"),
    "OUT already exists": (_out_exists, "out: already exists"),
    "OUT's parent does not exist": (lambda tmp_path, tickets: (tickets["bert-qa"], tmp_path / "no" / "out"),
                                    "is not a directory"),
    "OUT where nothing can be written": (lambda tmp_path, tickets: (tickets["bert-qa"], Path("/sys/eb-export")),
                                         "/sys: cannot write there"),  # EACCES / EPERM even for root
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(case, tickets, tmp_path):
    make, message = BAD_INPUTS[case]
    model_dir, out = make(tmp_path, tickets)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, stdout, stderr = run_cli("export", model_dir, "-o", out)
    assert code == 2
    assert stderr.count("\n") == 1 and stderr.startswith("earlybird: error: "), stderr
    assert message in stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no OUT, no temporary directory


def test_an_export_that_fails_its_check_leaves_nothing(tickets, tmp_path, monkeypatch):
    monkeypatch.setitem(export_module.ATOL, "hf", -1.0)  # every export now "differs" (onnx: the same commit path)
    code, stdout, stderr = run_cli("export", tickets["vit-classifier"], "-o", tmp_path / "out")
    assert code == 1
    assert "differs from the patched model" in stderr and "nothing was written" in stderr
    assert list(tmp_path.iterdir()) == []
