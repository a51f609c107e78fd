"""`earlybird export --format hf` for decoder LLMs (Llama, Qwen3) and the standard checkpoints of uniform tickets.

The equivalence: an *unpatched* transformers 5.23.0 (a subprocess with the pristine files first on PYTHONPATH) loads
the export and gives the patched ticket's logits and greedy tokens -- without `trust_remote_code` when the pruned
structure is uniform (a standard config with smaller sizes), with it otherwise (the patch's code beside the weights).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, LlamaConfig, LlamaForCausalLM, Qwen3Config
from transformers import Qwen3ForCausalLM

from earlybird import export as export_module
from test_export import run_cli, unpatched_site  # noqa: F401 -- a fixture

VOCAB, HEAD_DIM, INTER = 61, 8, 96
DECODERS = {"llama": (LlamaConfig, LlamaForCausalLM), "qwen3": (Qwen3Config, Qwen3ForCausalLM)}
# 3 layers of 8 query heads over 2 key/value heads (groups 0-3 and 4-7)
UNIFORM_WHOLE_GROUP = {"pruned_heads": {str(i): [4, 5, 6, 7] for i in range(3)},  # 4 query heads, 1 KV head each
                       "pruned_intermediate": {"0": list(range(20)), "1": list(range(40, 60)), "2": list(range(76, 96))}}
UNIFORM_SIX_HEADS = {"pruned_heads": {"0": [0, 4], "1": [1, 5], "2": [3, 7]},  # 6 query heads: 64 % 6 != 0
                     "pruned_intermediate": {}}
UNEVEN = {"pruned_heads": {"0": [4, 5, 6, 7], "2": [0, 1, 4, 5]}, "pruned_intermediate": {"1": [3, 4]}}
UNEVEN_HEADS = {"pruned_heads": {"0": [4, 5, 6, 7], "2": [0, 1, 4, 5]}, "pruned_intermediate": {}}

# name: (model, plan, whether the export is a standard checkpoint)
CASES = {
    "llama-uniform": ("llama", UNIFORM_WHOLE_GROUP, True),
    "qwen3-uniform": ("qwen3", UNIFORM_WHOLE_GROUP, True),
    "qwen3-six-heads": ("qwen3", UNIFORM_SIX_HEADS, True),
    "llama-six-heads": ("llama", UNIFORM_SIX_HEADS, False),  # LlamaConfig requires hidden_size % heads == 0
    "llama-uneven": ("llama", UNEVEN, False),
    "qwen3-uneven-heads": ("qwen3", UNEVEN_HEADS, False),
    "bert-ffn-only": ("bert", {"pruned_heads": {}, "pruned_intermediate": {str(i): list(range(10)) for i in range(3)}},
                      True),
    "bert-heads": ("bert", {"pruned_heads": {"1": [0]}, "pruned_intermediate": {}}, False),
}


def make_model(model: str):
    torch.manual_seed(0)
    flags = dict(self_slimming=True, inter_slimming=True)
    if model == "bert":
        config = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                            intermediate_size=37, max_position_embeddings=32, num_labels=2, **flags)
        return BertForSequenceClassification(config).eval()
    config_cls, model_cls = DECODERS[model]
    config = config_cls(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=3, num_attention_heads=8,
                        num_key_value_heads=2, intermediate_size=INTER, head_dim=HEAD_DIM, max_position_embeddings=64,
                        pad_token_id=0, bos_token_id=1, eos_token_id=None, **flags)
    return model_cls(config).eval()


def inputs_for(model: str) -> dict:
    gen = torch.Generator().manual_seed(3)
    input_ids = torch.randint(3, VOCAB, (2, 7), generator=gen)
    mask = torch.ones_like(input_ids)
    if model == "bert":
        mask[1, 4:] = 0
        return {"input_ids": input_ids, "attention_mask": mask}
    mask[1, :3] = 0  # left padding, as for generation
    return {"input_ids": input_ids.masked_fill(mask == 0, 0), "attention_mask": mask}


def reference(model, model_type: str, inputs: dict) -> dict:
    with torch.no_grad():
        out = {"logits": model(**inputs).logits}
        if model_type != "bert":
            out["tokens"] = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    return out


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict:
    """Every case: its ticket saved (random coefficients, pruned, unfolded), exported with the CLI; the patched model's
    logits and greedy tokens; what the export said."""
    from earlybird.slimming import apply_plan

    where = tmp_path_factory.mktemp("decoder-exports")
    out = {}
    for name, (model_type, plan, _) in CASES.items():
        model = make_model(model_type)
        gen = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for param_name, param in model.named_parameters():
                if param_name.endswith("slimming_coef"):
                    param.copy_(torch.rand(param.shape, generator=gen) * 1.5 + 0.1)
        apply_plan(model, plan)
        model.save_pretrained(where / name)
        inputs = inputs_for(model_type)
        torch.save(inputs, where / f"{name}.pt")
        code, stdout, stderr = run_cli("export", where / name, "-o", where / f"{name}-export", "--format", "hf")
        assert code == 0, stderr
        out[name] = dict(export=where / f"{name}-export", inputs=where / f"{name}.pt", stderr=stderr, stdout=stdout,
                         expected=reference(model, model_type, inputs))
    return out


PLAIN_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch, transformers

    job = json.load(open(sys.argv[1]))
    report = {"transformers_file": transformers.__file__,
              "patched": hasattr(transformers.LlamaForCausalLM, "prune_intermediate")}
    for case in job["cases"]:
        auto = getattr(transformers, case["auto"])
        inputs = torch.load(case["inputs"])
        model = auto.from_pretrained(case["export"], trust_remote_code=case["trust"]).eval()
        with torch.no_grad():
            result = {"class": f"{type(model).__module__}.{type(model).__name__}", "logits": model(**inputs).logits}
            if case["generate"]:
                result["tokens"] = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        report[case["name"]] = result
    torch.save(report, job["report"])
""")


@pytest.fixture(scope="module")
def unpatched(exports, unpatched_site, tmp_path_factory) -> dict:  # noqa: F811 -- the fixture imported above
    work = tmp_path_factory.mktemp("decoder-unpatched")
    cases = [dict(name=name, export=str(e["export"]), inputs=str(e["inputs"]), trust=not CASES[name][2],
                  generate=CASES[name][0] != "bert",
                  auto="AutoModelForSequenceClassification" if CASES[name][0] == "bert" else "AutoModelForCausalLM")
             for name, e in exports.items()]
    job = dict(cases=cases, report=str(work / "report.pt"))
    (work / "job.json").write_text(json.dumps(job))
    (work / "plain.py").write_text(PLAIN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(unpatched_site), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error",
           "HF_MODULES_CACHE": str(work / "modules")}
    proc = subprocess.run([sys.executable, str(work / "plain.py"), str(work / "job.json")], env=env, cwd=work,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return torch.load(work / "report.pt")


def test_the_subprocess_runs_an_unpatched_transformers(unpatched, unpatched_site):  # noqa: F811
    assert unpatched["transformers_file"].startswith(str(unpatched_site)) and unpatched["patched"] is False


@pytest.mark.parametrize("name", list(CASES))
def test_unpatched_transformers_gives_the_tickets_logits_and_tokens(name, exports, unpatched):
    model_type, _, standard = CASES[name]
    result, expected = unpatched[name], exports[name]["expected"]
    if standard:  # the built-in class, loaded without trust_remote_code
        assert result["class"].startswith(f"transformers.models.{model_type}.modeling_{model_type}.")
    else:
        assert result["class"].startswith("transformers_modules.")
    torch.testing.assert_close(result["logits"], expected["logits"], atol=1e-5, rtol=0)
    if "tokens" in expected:
        assert torch.equal(result["tokens"], expected["tokens"])


@pytest.mark.parametrize("name", [n for n, (_, _, standard) in CASES.items() if standard])
def test_a_uniform_ticket_is_a_standard_checkpoint(name, exports):
    model_type, plan, _ = CASES[name]
    config = json.loads((exports[name]["export"] / "config.json").read_text())
    assert config["model_type"] == model_type and "auto_map" not in config
    assert not set(export_module.PATCH_FIELDS) & set(config)
    assert not any(p.suffix == ".py" for p in exports[name]["export"].iterdir())
    assert "a standard" in exports[name]["stderr"] and "without trust_remote_code" in exports[name]["stderr"]
    if model_type == "bert":
        assert config["intermediate_size"] == 27 and config["num_attention_heads"] == 4
    elif plan is UNIFORM_WHOLE_GROUP:
        assert (config["num_attention_heads"], config["num_key_value_heads"], config["head_dim"],
                config["intermediate_size"]) == (4, 1, HEAD_DIM, INTER - 20)
    else:
        assert (config["num_attention_heads"], config["num_key_value_heads"]) == (6, 2)


@pytest.mark.parametrize("name, why", [("llama-uneven", "FFN widths differ across layers"),
                                       ("qwen3-uneven-heads", "query / key-value head counts differ across layers"),
                                       ("llama-six-heads", "LlamaConfig refuses these sizes"),
                                       ("bert-heads", "pruned heads (the head size derives from the hidden size)")])
def test_a_ticket_a_built_in_config_cannot_state_keeps_the_custom_code_export(name, why, exports):
    config = json.loads((exports[name]["export"] / "config.json").read_text())
    assert config["model_type"].startswith("earlybird_") and "auto_map" in config
    assert f"custom-code export (loads with trust_remote_code=True): {why}" in exports[name]["stderr"]


def test_onnx_of_a_decoder_is_refused_with_one_line(exports, tmp_path):
    ticket = exports["llama-uniform"]["export"].with_name("llama-uniform")
    code, stdout, stderr = run_cli("export", ticket, "-o", tmp_path / "out", "--format", "onnx")
    assert code == 2 and stderr.count("\n") == 1 and "--format onnx exports ViT and BERT only" in stderr
    assert not (tmp_path / "out").exists()
