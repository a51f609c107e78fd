"""Local `evaluate` metrics: accuracy and SQuAD v1.1 EM/F1, loaded by path (offline)."""

import pytest

from earlybird.errors import EarlyBirdError
from earlybird.metrics import load_metric, metric_path


def test_accuracy():
    metric = load_metric("accuracy")
    assert metric.compute(predictions=[0, 1, 2, 2], references=[0, 1, 1, 2]) == {"accuracy": 0.75}
    assert metric.compute(predictions=[1, 1], references=[1, 0], normalize=False) == {"accuracy": 1.0}
    weighted = metric.compute(predictions=[1, 0], references=[1, 1], sample_weight=[3.0, 1.0])
    assert weighted["accuracy"] == pytest.approx(0.75)


def squad(predictions, references):
    return load_metric("squad").compute(
        predictions=[{"id": str(i), "prediction_text": p} for i, p in enumerate(predictions)],
        references=[{"id": str(i), "answers": {"text": list(r), "answer_start": [0] * len(r)}}
                    for i, r in enumerate(references)])


def test_squad_normalisation_gives_exact_matches():
    # case, punctuation, articles and whitespace are ignored (official v1.1 normalisation)
    scores = squad(["The  Eiffel Tower!", "an apple", "Paris"], [["eiffel tower"], ["Apple."], ["paris", "france"]])
    assert scores == {"exact_match": 100.0, "f1": 100.0}


def test_squad_partial_f1_and_best_reference():
    # prediction "big red barn" vs "red barn": precision 2/3, recall 1 -> F1 0.8
    scores = squad(["big red barn"], [["red barn"]])
    assert scores["exact_match"] == 0.0
    assert scores["f1"] == pytest.approx(80.0)
    # the best of several references counts
    assert squad(["blue"], [["red", "blue sky", "blue"]]) == {"exact_match": 100.0, "f1": 100.0}
    # no overlap, and an empty prediction, score 0
    assert squad(["green", ""], [["red"], ["red"]]) == {"exact_match": 0.0, "f1": 0.0}


def test_metrics_are_local_scripts():
    assert metric_path("accuracy").is_file() and metric_path("squad").is_file()
    with pytest.raises(EarlyBirdError, match="unknown metric"):
        load_metric("bleu")
