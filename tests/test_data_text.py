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
