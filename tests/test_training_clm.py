"""Decoder LLMs (Llama, Qwen3 with grouped-query attention) end to end on tiny random models and a tokenizer trained
here: run_clm.py slimming with records -> `earlybird detect` -> `earlybird plan` -> ticket retrained; EB-Train
pruning in place; EarlyBirdCallback in a real Trainer on a causal LM (its draw is `earlybird detect` on its records).
Every pruned model keeps THE GQA RULE (its `prune_heads` refuses anything else)."""

import json
import math

import pytest
import torch

from clm_support import make_corpus, make_tiny_decoder
from earlybird.cli import main as cli_main
from earlybird.masks import gqa_violation
from earlybird.plans import load_plan
from earlybird.records import load_records
from test_export import unpatched_site  # noqa: F401 -- a fixture: the pristine transformers for a subprocess
from test_training_support import load_script, read_json, read_jsonl

run_clm = load_script("Finetuning/run_clm.py", "run_clm")

pytestmark = pytest.mark.usefixtures("one_thread_only")

SLIM = ["--self-slimming", "--inter-slimming", "--l1-self", "1e-2", "--l1-inter", "1e-2"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("clm")
    corpus = make_corpus(root / "corpus.txt")
    return {"root": root, "corpus": corpus, "llama": make_tiny_decoder(root / "llama", "llama", corpus),
            "qwen3": make_tiny_decoder(root / "qwen3", "qwen3", corpus)}


def clm_args(ws, model, out, steps=12):
    return ["--model-name-or-path", str(ws[model]), "--train-file", str(ws["corpus"]), "--block-size", "16",
            "--output-dir", str(out), "--max-steps", str(steps), "--learning-rate", "3e-3", "--disable-tqdm",
            "--per-device-train-batch-size", "8", "--logging-steps", "4"]


def _valid_gqa(plan, heads=8, group=4):
    return all(gqa_violation(v, heads, group) is None for v in plan["pruned_heads"].values())


@pytest.mark.parametrize("model", ("llama", "qwen3"))
def test_slim_detect_plan_ticket(model, workspace, tmp_path, capsys):
    slim = tmp_path / "slim"
    assert run_clm.main(clm_args(workspace, model, slim) + SLIM) == 0
    records = load_records(slim / "records")
    assert records.msa.shape == (12, 4, 8) and records.mlp.shape == (12, 4, 96)
    assert records.meta["model"]["kv_heads"] == 2 and records.group_size("msa") == 4
    results = read_json(slim / "results.json")
    assert results["perplexity"] == pytest.approx(math.exp(results["loss"]))
    losses = [line["loss"] for line in read_jsonl(slim / "metrics.jsonl") if line["type"] == "train"]
    assert losses[-1] < losses[0]

    capsys.readouterr()
    assert cli_main(["detect", str(slim), "--block", "msa", "--ratio", "0.5", "--method", "hamming", "--cached", "3",
                     "--threshold", "0.5"]) == 0
    step = capsys.readouterr().out.strip()
    step = int(step) if step != "none" else 8
    plan_path = tmp_path / "plan.json"
    assert cli_main(["plan", str(slim), "--step", str(step), "--self-pruning-ratio", "0.5", "--inter-pruning-ratio",
                     "0.55", "--self-pruning-scope", "uniform", "--inter-pruning-scope", "uniform", "--round-to", "2",
                     "-o", str(plan_path)]) == 0
    plan = load_plan(plan_path)
    assert plan["shape"]["kv_heads"] == 2 and plan["provenance"]["gqa_rule"] == "per-group" and _valid_gqa(plan)

    ticket = tmp_path / "ticket"
    assert run_clm.main(clm_args(workspace, model, ticket, steps=8) + ["--prune-plan", str(plan_path)]) == 0
    results = read_json(ticket / "results.json")
    # 2 of 4 heads per KV group; 96 - round(52.8) = 43 neurons kept, rounded up to 44
    assert results["kept"] == {"heads": [4] * 4, "intermediate": [44] * 4, "kv_heads": [2] * 4}
    from transformers import AutoModelForCausalLM

    reloaded, info = AutoModelForCausalLM.from_pretrained(ticket / "final", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]


def test_ebtrain_prunes_whole_kv_groups_in_place(workspace, tmp_path, capsys):
    out = tmp_path / "eb"
    assert run_clm.main(clm_args(workspace, "llama", out, steps=16) + SLIM + [
        "--eb-method", "hamming", "--eb-block", "both", "--eb-cached", "3", "--eb-threshold", "0.5",
        "--self-pruning-ratio", "0.5", "--inter-pruning-ratio", "0.5", "--self-pruning-scope", "uniform",
        "--inter-pruning-scope", "uniform", "--gqa-rule", "groups"]) == 0
    summary = read_json(out / "ebtrain.json")
    assert summary["draw_step"] is not None
    assert summary["shape_after"] == {"heads": [4] * 4, "intermediate": [48] * 4, "kv_heads": [1] * 4}  # 1 group of 2
    plan = read_json(out / "plan.json")
    assert plan["provenance"]["gqa_rule"] == "groups" and _valid_gqa(plan)
    for heads in plan["pruned_heads"].values():  # a whole group: heads 0-3 or 4-7
        assert sorted(heads) in ([0, 1, 2, 3], [4, 5, 6, 7])
    # the draw is where the later of the two blocks' detectors draws on the records (`earlybird detect`, the same GQA
    # rule); the head masks differ under the other rule
    steps = {}
    for block, rule in (("msa", "groups"), ("mlp", "groups"), ("msa", "per-group")):
        capsys.readouterr()
        assert cli_main(["detect", str(out), "--block", block, "--ratio", "0.5", "--method", "hamming", "--cached",
                         "3", "--threshold", "0.5", "--gqa-rule", rule, "--full-trace", "--json"]) == 0
        steps[block, rule] = json.loads(capsys.readouterr().out)
    assert max(steps["msa", "groups"]["draw_step"], steps["mlp", "groups"]["draw_step"]) == summary["draw_step"]
    assert ([e["distance"] for e in steps["msa", "groups"]["trace"]] !=
            [e["distance"] for e in steps["msa", "per-group"]["trace"]])


def test_bad_clm_input_is_one_line(workspace, tmp_path, capsys):
    base = clm_args(workspace, "llama", tmp_path / "x")
    assert run_clm.main(base + ["--block-size", "100"]) == 2
    assert "--block-size must be in 2..64 (the model's max_position_embeddings), got 100" in capsys.readouterr().err
    assert run_clm.main(base + ["--config-name", str(workspace["llama"])]) == 2
    assert "give one of --model-name-or-path (pretrained weights) and --config-name" in capsys.readouterr().err
    assert run_clm.main(base + ["--soft-by-one"]) == 2
    assert "--soft-by-one is an option of the ViT/BERT patch" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


# --------------------------------------------------------------------------- the Trainer callback


def test_callback_on_a_causal_lm_draws_as_detect_does(workspace, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments

    from earlybird.hf import EarlyBirdCallback

    tokenizer = AutoTokenizer.from_pretrained(workspace["llama"])
    ids = tokenizer(workspace["corpus"].read_text().split("\n"), add_special_tokens=False)["input_ids"]
    flat = [t for row in ids for t in row]
    blocks = [flat[i:i + 16] for i in range(0, len(flat) - 16, 16)][:64]
    dataset = [{"input_ids": torch.tensor(b), "labels": torch.tensor(b)} for b in blocks]
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(workspace["llama"], self_slimming=True, inter_slimming=True)
    callback = EarlyBirdCallback(l1_self=1e-2, l1_inter=1e-2, method="hamming", block="msa", ratio=0.5, cached=3,
                                 threshold=0.5, self_pruning_ratio=0.5, inter_pruning_ratio=0.5,
                                 self_pruning_scope="uniform", inter_pruning_scope="uniform", save_ticket=True,
                                 stop_at_draw=True)
    args = TrainingArguments(str(tmp_path / "out"), max_steps=24, per_device_train_batch_size=8, learning_rate=3e-3,
                             use_cpu=True, report_to="none", disable_tqdm=True, save_strategy="no", logging_steps=4,
                             seed=0, data_seed=0)
    Trainer(model=model, args=args, train_dataset=dataset, callbacks=[callback], processing_class=tokenizer).train()
    assert callback.draw_step is not None
    from earlybird.detectors import detect

    offline = detect(tmp_path / "out" / "records", "msa", 0.5, method="hamming", cached=3, threshold=0.5)
    assert offline.draw_step == callback.draw_step
    plan = load_plan(tmp_path / "out" / "plan.json")
    assert _valid_gqa(plan) and plan["shape"]["kv_heads"] == 2
    assert {len(v) for v in plan["pruned_heads"].values()} == {4}
    ticket = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "ticket")
    assert ticket.config.pruned_heads and ticket.model.layers[0].self_attn.num_key_value_heads == 2
    batch = torch.tensor(blocks[:2])
    with torch.no_grad():
        assert torch.isfinite(ticket(input_ids=batch).logits).all()
    json.dumps(callback.summary())


# --------------------------------------------------------------------------- uniform ticket -> standard checkpoint

PLAIN_GENERATE = """
import json, sys
import torch, transformers
job = json.load(open(sys.argv[1]))
model = transformers.AutoModelForCausalLM.from_pretrained(job["export"]).eval()  # no trust_remote_code
with torch.no_grad():
    tokens = model.generate(input_ids=torch.tensor(job["prompt"]), max_new_tokens=8, do_sample=False, pad_token_id=0)
print(json.dumps({"tokens": tokens.tolist(), "patched": hasattr(model.model.layers[0].mlp, "prune_intermediate"),
                  "transformers_file": transformers.__file__}))
"""


def test_uniform_ticket_exports_to_a_standard_checkpoint_plain_transformers_runs(workspace, tmp_path,
                                                                                  unpatched_site):  # noqa: F811
    import os
    import subprocess
    import sys

    from transformers import AutoModelForCausalLM

    slim = tmp_path / "slim"
    assert run_clm.main(clm_args(workspace, "llama", slim, steps=8) + SLIM) == 0
    plan = tmp_path / "plan.json"
    assert cli_main(["plan", str(slim), "--step", "6", "--self-pruning-ratio", "0.5", "--inter-pruning-ratio", "0.5",
                     "--self-pruning-scope", "uniform", "--inter-pruning-scope", "uniform", "--gqa-rule", "groups",
                     "-o", str(plan)]) == 0
    ticket = tmp_path / "ticket"
    assert run_clm.main(clm_args(workspace, "llama", ticket, steps=6) + ["--prune-plan", str(plan)]) == 0
    exported = tmp_path / "export"
    assert cli_main(["export", str(ticket / "final"), "--format", "hf", "-o", str(exported)]) == 0
    config = json.loads((exported / "config.json").read_text())
    assert "auto_map" not in config and not config.get("pruned_heads")
    assert (config["num_attention_heads"], config["num_key_value_heads"], config["intermediate_size"]) == (4, 1, 48)

    prompt = [[3, 5, 7, 9, 11]]
    patched = AutoModelForCausalLM.from_pretrained(ticket / "final").eval()
    with torch.no_grad():
        expected = patched.generate(input_ids=torch.tensor(prompt), max_new_tokens=8, do_sample=False,
                                    pad_token_id=0).tolist()
    (tmp_path / "job.json").write_text(json.dumps({"export": str(exported), "prompt": prompt}))
    (tmp_path / "plain.py").write_text(PLAIN_GENERATE)
    env = {**os.environ, "PYTHONPATH": str(unpatched_site), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    proc = subprocess.run([sys.executable, str(tmp_path / "plain.py"), str(tmp_path / "job.json")], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    plain = json.loads(proc.stdout.strip().splitlines()[-1])
    assert plain["transformers_file"].startswith(str(unpatched_site)) and plain["patched"] is False
    assert plain["tokens"] == expected
