"""Text data: GLUE-style files, SQuAD JSON, the QA windows and their postprocessing."""

import json

import numpy as np
import pytest

from earlybird.data import text
from earlybird.errors import EarlyBirdError
from earlybird.metrics import load_metric
from test_training_support import make_squad_json, make_tiny_bert


def test_tsv_is_read_glue_style(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text('sentence\tlabel\nit \'s a "quoted" film \t1\nbad\t0\n')
    rows = text.read_table(path)
    assert rows == [{"sentence": 'it \'s a "quoted" film ', "label": "1"}, {"sentence": "bad", "label": "0"}]
    dd = text.load_classification_files({"train": str(path)})
    assert dd["train"]["label"] == [1, 0]


def test_string_labels_are_numbered_from_the_training_file(tmp_path):
    (tmp_path / "train.csv").write_text("sentence,label\na,pos\nb,neg\nc,pos\n")
    (tmp_path / "dev.csv").write_text("sentence,label\nd,neg\n")
    (tmp_path / "bad.csv").write_text("sentence,label\nd,meh\n")
    dd = text.load_classification_files({"train": tmp_path / "train.csv", "validation": tmp_path / "dev.csv"})
    assert dd["train"]["label"] == [1, 0, 1] and dd["validation"]["label"] == [0]
    with pytest.raises(EarlyBirdError, match="do not occur in the training file"):
        text.load_classification_files({"train": tmp_path / "train.csv", "test": tmp_path / "bad.csv"})


def test_missing_columns(tmp_path):
    (tmp_path / "a.tsv").write_text("text_a\tlabel\nx\t1\n")
    (tmp_path / "b.tsv").write_text("sentence\ty\nx\t1\n")
    with pytest.raises(EarlyBirdError, match="no text column"):
        text.load_classification_files({"train": tmp_path / "a.tsv"})
    with pytest.raises(EarlyBirdError, match="no 'label' column"):
        text.load_classification_files({"train": tmp_path / "b.tsv"})
    with pytest.raises(EarlyBirdError, match="no such file"):
        text.read_table(tmp_path / "missing.tsv")


def test_squad_json_is_flattened_and_checked(tmp_path):
    ds = text.read_squad_json(make_squad_json(tmp_path / "s.json", n=5))
    assert len(ds) == 5 and set(ds.column_names) == {"id", "title", "context", "question", "answers"}
    (tmp_path / "bad.json").write_text(json.dumps({"version": "1.1", "rows": []}))
    with pytest.raises(EarlyBirdError, match="not SQuAD format"):
        text.read_squad_json(tmp_path / "bad.json")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(make_tiny_bert(tmp_path_factory.mktemp("bert"), max_position=128))


def test_train_windows_point_at_the_answer(tmp_path, tokenizer):
    ds = text.read_squad_json(make_squad_json(tmp_path / "s.json", n=8))
    examples = ds[:]
    features = text.prepare_train_features(examples, tokenizer, max_seq_length=32, doc_stride=8)
    sample_map = tokenizer(examples["question"], examples["context"], truncation="only_second", max_length=32,
                           stride=8, return_overflowing_tokens=True)["overflow_to_sample_mapping"]
    assert len(features["input_ids"]) > len(ds)  # long contexts are split into windows
    found = 0
    for i, (s, e) in enumerate(zip(features["start_positions"], features["end_positions"])):
        if s == 0:  # the answer is not in this window: CLS
            continue
        answer = examples["answers"][sample_map[i]]["text"][0]
        assert tokenizer.decode(features["input_ids"][i][s:e + 1]) == answer
        found += 1
    assert found >= len(ds)


def test_postprocessing_recovers_answers_from_oracle_logits(tmp_path, tokenizer):
    ds = text.read_squad_json(make_squad_json(tmp_path / "s.json", n=8))
    examples = ds[:]
    train = text.prepare_train_features(examples, tokenizer, max_seq_length=32, doc_stride=8)
    features = text.prepare_validation_features(examples, tokenizer, max_seq_length=32, doc_stride=8)
    assert len(features["example_id"]) == len(train["input_ids"])  # the same windows
    length = len(features["input_ids"][0])
    start = np.full((len(features["input_ids"]), length), -10.0)
    end = np.full_like(start, -10.0)
    for i, (s, e) in enumerate(zip(train["start_positions"], train["end_positions"])):
        start[i, s] = end[i, e] = 10.0 if s else -5.0
    predictions = text.postprocess_qa_predictions(examples, features, start, end)
    references = [{"id": i, "answers": a} for i, a in zip(examples["id"], examples["answers"])]
    scores = load_metric("squad").compute(
        predictions=[{"id": k, "prediction_text": v} for k, v in predictions.items()], references=references)
    assert scores == {"exact_match": 100.0, "f1": 100.0}


# --------------------------------------------------------------------------- tokenised once


@pytest.fixture(scope="module")
def bert_workspace(tmp_path_factory):
    from test_training_support import make_sentiment_tsv

    root = tmp_path_factory.mktemp("bert-data")
    return {"model": make_tiny_bert(root / "model", max_position=64), "tsv": make_sentiment_tsv(root / "sst"),
            "train": make_squad_json(root / "train.json", n=24), "dev": make_squad_json(root / "dev.json", n=6, seed=1)}


def bert_argv(ws, task, out, steps):
    if task == "glue":
        data = ["--train-file", str(ws["tsv"] / "train.tsv"), "--validation-file", str(ws["tsv"] / "dev.tsv"),
                "--test-file", str(ws["tsv"] / "test.tsv")]
    else:
        data = ["--train-file", str(ws["train"]), "--predict-file", str(ws["dev"]), "--max-seq-length", "48",
                "--doc-stride", "16"]
    return ["--model-name-or-path", str(ws["model"]), "--task", task, *data, "--output-dir", str(out), "--max-steps",
            str(steps), "--per-device-train-batch-size", "8", "--disable-tqdm"]


@pytest.mark.parametrize("task", ["glue", "squad"])
def test_text_is_tokenised_once_not_per_step(bert_workspace, tmp_path, monkeypatch, task):
    """The tokenizer runs when the task is built (one `Dataset.map` batch per split), never during training: a run
    of 12 steps (2 epochs of the GLUE file) calls it as often as a run of 1 step; batches are only padded."""
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    from test_training_support import load_script, one_thread

    run_bert = load_script("Finetuning/run_bert.py", "run_bert")
    calls = {"tokenize": 0, "pad": 0}
    for name, key in (("__call__", "tokenize"), ("pad", "pad")):
        original = getattr(PreTrainedTokenizerBase, name)

        def counted(self, *args, _original=original, _key=key, **kwargs):
            calls[_key] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(PreTrainedTokenizerBase, name, counted)
    counts = {}
    with one_thread():
        for steps in (1, 12):
            calls.update(tokenize=0, pad=0)
            assert run_bert.main(bert_argv(bert_workspace, task, tmp_path / str(steps), steps)) == 0
            counts[steps] = dict(calls)
    splits = 3 if task == "glue" else 2  # glue: train, validation, test; squad: train and evaluation windows
    assert counts[1]["tokenize"] == counts[12]["tokenize"] == splits
    if task == "glue":  # dynamic padding: once per batch (glue evaluates validation and test only at the end)
        assert counts[12]["pad"] - counts[1]["pad"] == 11


def test_a_batch_of_rows_is_the_rows(tokenizer):
    """`__getitems__` (one Arrow read of the batch) gives the rows that per-row reads give, columns selected."""
    import datasets

    rows = datasets.Dataset.from_dict({"sentence": ["paris is a city", "rome", "the river in london"],
                                       "label": [1, 0, 1]})
    tokenized = text.tokenize_classification(rows, tokenizer, ("sentence", None), 16)
    ds = text.TokenizedDataset(tokenized)
    assert ds.__getitems__([2, 0]) == [ds[2], ds[0]] and set(ds[0]) == {"input_ids", "token_type_ids",
                                                                        "attention_mask", "labels"}
    only = text.TokenizedDataset(tokenized, ["input_ids", "labels"])
    assert only.__getitems__([1]) == [{"input_ids": ds[1]["input_ids"], "labels": 0}]
    assert not ds.decodes_from_files
