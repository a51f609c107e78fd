"""BERT end to end on a tiny model and tokenizer made here: GLUE-style classification from TSV files and
SQuAD from JSON files, slim -> records -> ticket -> reload."""

import pytest
import torch

from earlybird.records import load_records
from test_training_support import (load_script, make_sentiment_tsv, make_squad_json, make_tiny_bert,
                                   read_json, read_jsonl)

run_bert = load_script("Finetuning/run_bert.py", "run_bert")


pytestmark = pytest.mark.usefixtures("one_thread_only")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("bert")
    return {"root": root, "model": make_tiny_bert(root / "model", max_position=64),
            "tsv": make_sentiment_tsv(root / "sst"),
            "train": make_squad_json(root / "train.json", n=24), "dev": make_squad_json(root / "dev.json", n=6, seed=1)}


def glue_args(ws, out, steps=24):
    return ["--model-name-or-path", str(ws["model"]), "--task", "glue", "--train-file", str(ws["tsv"] / "train.tsv"),
            "--validation-file", str(ws["tsv"] / "dev.tsv"), "--test-file", str(ws["tsv"] / "test.tsv"),
            "--output-dir", str(out), "--max-steps", str(steps), "--learning-rate", "2e-3", "--disable-tqdm",
            "--per-device-train-batch-size", "8", "--logging-steps", "8"]


def squad_args(ws, out, steps=16):
    return ["--model-name-or-path", str(ws["model"]), "--task", "squad", "--train-file", str(ws["train"]),
            "--predict-file", str(ws["dev"]), "--max-seq-length", "48", "--doc-stride", "16", "--output-dir", str(out),
            "--max-steps", str(steps), "--learning-rate", "3e-3", "--disable-tqdm", "--per-device-train-batch-size", "8"]


SLIM = ["--self-slimming", "--inter-slimming", "--l1-self", "1e-2", "--l1-inter", "1e-2"]


def test_glue_slim_then_ticket_then_reload(workspace, tmp_path):
    from transformers import AutoTokenizer, BertForSequenceClassification

    slim = tmp_path / "slim"
    assert run_bert.main(glue_args(workspace, slim) + SLIM) == 0
    records = load_records(slim / "records")
    assert records.msa.shape == (24, 2, 4) and records.mlp.shape == (24, 2, 37)
    results = read_json(slim / "results.json")
    assert results["split"] == "test" and results["num_examples"] == 16
    losses = [l["loss"] for l in read_jsonl(slim / "metrics.jsonl") if l["type"] == "train"]
    assert losses[-1] < losses[0]

    ticket = tmp_path / "ticket"
    assert run_bert.main(glue_args(workspace, ticket) + [
        "--records", str(slim / "records"), "--prune-step", "12", "--self-pruning-ratio", "0.5",
        "--inter-pruning-ratio", "0.5"]) == 0
    results = read_json(ticket / "results.json")
    assert results["kept"] == {"heads": [2, 2], "intermediate": [19, 19]}  # round(0.5 * 37) = 18 pruned

    model, info = BertForSequenceClassification.from_pretrained(ticket / "final", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tokenizer = AutoTokenizer.from_pretrained(ticket / "final")  # saved beside the weights
    rows = [line.split("\t") for line in (workspace["tsv"] / "test.tsv").read_text().splitlines()[1:]]
    batch = tokenizer([r[0] for r in rows], padding=True, return_tensors="pt")
    with torch.no_grad():
        predictions = model.eval()(**batch).logits.argmax(-1)
    accuracy = float((predictions == torch.tensor([int(r[1]) for r in rows])).float().mean())
    assert accuracy == pytest.approx(results["accuracy"])


def test_squad_slim_then_ticket_rewound_to_the_step(workspace, tmp_path):
    from transformers import BertForQuestionAnswering

    slim = tmp_path / "slim"
    assert run_bert.main(squad_args(workspace, slim) + SLIM + ["--save-steps", "8"]) == 0
    results = read_json(slim / "results.json")
    assert results["eval_examples"] == 6 and results["train_features"] > 24  # long contexts -> several windows
    assert 0.0 <= results["exact_match"] <= results["f1"] <= 100.0

    ticket = tmp_path / "ticket"
    assert run_bert.main(squad_args(workspace, ticket) + [
        "--records", str(slim / "records"), "--prune-step", "8", "--self-pruning-ratio", "0.25",
        "--rewind", "none"]) == 0
    assert read_json(ticket / "results.json")["kept"]["heads"] == [3, 3]
    model, info = BertForQuestionAnswering.from_pretrained(ticket / "final", output_loading_info=True)
    assert not info["missing_keys"] and model.config.pruned_heads


@pytest.mark.parametrize("argv, expected", [
    (["--task", "glue"], "--task glue needs --glue-task"),
    (["--task", "squad", "--train-file", "x.json"], "needs both --train-file and --predict-file"),
    (["--task", "squad", "--max-seq-length", "128"], "exceeds the model's max_position_embeddings 64"),
    (["--task", "glue", "--predict-file", "x.json"], "--predict-file goes with --task squad"),
])
def test_bert_bad_input(argv, expected, workspace, tmp_path, capsys):
    code = run_bert.main(["--model-name-or-path", str(workspace["model"]), "--output-dir", str(tmp_path / "o"),
                          "--disable-tqdm", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("run_bert.py: error: ") and expected in err[0], err
