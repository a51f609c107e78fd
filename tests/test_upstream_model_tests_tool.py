"""tools/run_upstream_model_tests.py: its variants build the patched decoders they claim, its counts are per class."""

import importlib
import sys

import pytest
from transformers import LlamaForCausalLM, Qwen3ForCausalLM

from test_training_support import load_script

tool = load_script("tools/run_upstream_model_tests.py", "run_upstream_model_tests")

# Stand-ins for transformers' test files: a tester whose get_config() builds a tiny config from its head counts,
# as CausalLMModelTester does.
UPSTREAM = '''
from transformers import {Model}Config


class {Model}ModelTester:
    def __init__(self, parent, num_attention_heads=2, num_key_value_heads=2):
        self.heads, self.kv_heads = num_attention_heads, num_key_value_heads

    def get_config(self):
        return {Model}Config(vocab_size=99, hidden_size=32, num_hidden_layers=2, intermediate_size=37,
                             num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
                             head_dim=32 // self.heads)


class {Model}ModelTest:
    pass
'''


@pytest.fixture
def tree(tmp_path, monkeypatch):
    for model, name in tool.MODELS.items():
        folder = tmp_path / "tests" / "models" / model
        folder.mkdir(parents=True)
        (folder / f"test_modeling_{model}.py").write_text(UPSTREAM.format(Model=name))
        for package in (folder, folder.parent, folder.parent.parent):
            (package / "__init__.py").touch()
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [name for name in sys.modules if name == "tests" or name.startswith("tests.")]:
        monkeypatch.delitem(sys.modules, name)
    yield tmp_path
    for name in [name for name in sys.modules if name == "tests" or name.startswith("tests.")]:
        del sys.modules[name]


@pytest.mark.parametrize("model, causal_lm", [("llama", LlamaForCausalLM), ("qwen3", Qwen3ForCausalLM)])
def test_the_variants_build_the_features_they_name(tree, model, causal_lm):
    tool.write_variants(tree)
    variants = importlib.import_module(f"tests.models.{model}.test_eb_variants")
    name = tool.MODELS[model]
    assert getattr(variants, f"{name}PrunedTest").model_tester_class is variants.PrunedTester

    gqa = causal_lm(variants.GQATester(None).get_config())
    slim = causal_lm(variants.SlimTester(None).get_config())
    pruned = causal_lm(variants.PrunedTester(None).get_config())
    assert (gqa.config.num_attention_heads, gqa.config.num_key_value_heads) == (4, 2)
    assert gqa.model.layers[0].self_attn.self_slimming_coef is None
    assert slim.model.layers[0].self_attn.self_slimming_coef.shape == (4,)
    assert slim.model.layers[0].mlp.inter_slimming_coef.shape == (37,)
    # layer 0 keeps one whole key/value group, layer 1 one query head of each; layer 1 loses 2 neurons
    kept = [(layer.self_attn.k_proj.out_features // 8, layer.self_attn.self_slimming_coef.numel())
            for layer in pruned.model.layers]
    assert kept == [(1, 2), (2, 2)]
    assert [layer.mlp.down_proj.in_features for layer in pruned.model.layers] == [37, 35]


def test_a_tree_without_the_upstream_file_is_refused(tmp_path):
    with pytest.raises(SystemExit, match=r"test_modeling_llama\.py: expected transformers' own Llama test file"):
        tool.write_variants(tmp_path)


def test_counts_are_per_test_class(tmp_path):
    junit = tmp_path / "junit.xml"
    junit.write_text(
        '<testsuites><testsuite>'
        '<testcase classname="tests.models.llama.test_eb_variants.LlamaPrunedTest" name="test_attention_outputs">'
        '<failure message="x"/></testcase>'
        '<testcase classname="tests.models.llama.test_eb_variants.LlamaPrunedTest" name="test_model"/>'
        '<testcase classname="tests.models.qwen3.test_modeling_qwen3.Qwen3ModelTest" name="test_gpu">'
        '<skipped/></testcase>'
        '</testsuite></testsuites>')
    counts = tool.per_class(junit)
    assert counts["LlamaPrunedTest"] == ({"failed": 1, "passed": 1}, ["test_attention_outputs"])
    assert counts["Qwen3ModelTest"] == ({"skipped": 1}, [])
