"""SQuAD v1.1 exact match and F1 as a local `evaluate` metric (the official v1.1 evaluation script's rules).

An answer is normalised before comparing: lower-cased, punctuation removed, the articles a/an/the removed,
whitespace collapsed. A prediction scores the best EM / F1 over the question's reference answers; the
totals are percentages (0-100), as the official script reports them.
"""

import collections
import re
import string

import datasets
import evaluate

_DESCRIPTION = "SQuAD v1.1: exact match and token-level F1 against the reference answers, in percent."
_KWARGS_DESCRIPTION = """
Args:
    predictions: list of {"id": str, "prediction_text": str}.
    references: list of {"id": str, "answers": {"text": [str, ...], "answer_start": [int, ...]}}.
Returns:
    exact_match (float), f1 (float): in percent.
Example:
    >>> metric = evaluate.load("earlybird/metrics/squad")
    >>> metric.compute(predictions=[{"id": "1", "prediction_text": "the Cat"}],
    ...                references=[{"id": "1", "answers": {"text": ["cat"], "answer_start": [0]}}])
    {'exact_match': 100.0, 'f1': 100.0}
"""

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower-case, drop punctuation and articles, collapse whitespace (official SQuAD v1.1)."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def f1_score(prediction: str, truth: str) -> float:
    prediction_tokens = normalize_answer(prediction).split()
    truth_tokens = normalize_answer(truth).split()
    common = collections.Counter(prediction_tokens) & collections.Counter(truth_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(prediction_tokens)
    recall = same / len(truth_tokens)
    return 2 * precision * recall / (precision + recall)


def exact_match_score(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def _best(fn, prediction, truths):
    return max((fn(prediction, t) for t in truths), default=0.0)


class Squad(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Rajpurkar et al., 2016, SQuAD: 100,000+ Questions for Machine Comprehension of Text.",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {"id": datasets.Value("string"), "prediction_text": datasets.Value("string")},
                    "references": {
                        "id": datasets.Value("string"),
                        "answers": datasets.features.Sequence(
                            {"text": datasets.Value("string"), "answer_start": datasets.Value("int32")}
                        ),
                    },
                }
            ),
        )

    def _compute(self, predictions, references):
        by_id = {p["id"]: p["prediction_text"] for p in predictions}
        exact = f1 = 0.0
        for ref in references:
            truths = list(ref["answers"]["text"])
            prediction = by_id.get(ref["id"])
            if prediction is None:  # unanswered: scores 0, as in the official script
                continue
            exact += _best(exact_match_score, prediction, truths)
            f1 += _best(f1_score, prediction, truths)
        total = len(references)
        return {"exact_match": 100.0 * exact / total if total else 0.0, "f1": 100.0 * f1 / total if total else 0.0}
