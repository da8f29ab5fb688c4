"""One evaluation path for every model form."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distillery.ml.report.baseline import BaselinePredictor, fit_baseline
from distillery.ml.report.evaluation import (
    THROUGHPUT_BATCH_SIZE,
    ModelEvaluation,
    evaluate_predictor,
)
from distillery.ml.serve.inference import Predictor, predict_labels

VOCAB = ["neg", "neu", "pos"]
FAST = {"latency_repeats": 5, "warmup": 2, "throughput_batches": 2}


class FakePredictor:
    """Deterministic: a text's first word names its predicted label.

    Columns are in ``column_order`` (not necessarily the vocabulary's); every call
    records its batch size and torch's thread count at that moment.
    """

    def __init__(self, column_order: list[str], num_threads: int | None = None) -> None:
        self._labels = list(column_order)
        self.num_threads = num_threads
        self.calls: list[tuple[list[str], int]] = []

    @property
    def labels(self) -> list[str]:
        return self._labels

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        self.calls.append((list(texts), torch.get_num_threads()))
        proba = np.full((len(texts), len(self._labels)), 0.1, dtype=np.float32)
        for row, text in enumerate(texts):
            proba[row, self._labels.index(text.split()[0])] = 0.8
        return proba


class FailingPredictor(FakePredictor):
    def predict_proba(self, texts: list[str]) -> np.ndarray:
        raise RuntimeError("model crashed")


# Gold labels and what the fake predicts (its first word): 2 errors in 8.
GOLD = ["neg", "neg", "neg", "neu", "neu", "pos", "pos", "pos"]
PREDICTED = ["neg", "neg", "neu", "neu", "pos", "pos", "pos", "pos"]
TEXTS = [f"{p} text {i}" for i, p in enumerate(PREDICTED)]
LATENCY_TEXTS = ["neg short", "pos short", "neu short"]


def _evaluate(predictor: Predictor, **kwargs) -> ModelEvaluation:
    options = {
        "latency_texts": LATENCY_TEXTS,
        "num_threads": 1,
        "labels": VOCAB,
        **FAST,
        **kwargs,
    }
    return evaluate_predictor(
        "fake", "student", "onnx-int8", predictor, TEXTS, GOLD, 1234, **options
    )


def test_evaluate_predictor_scores_in_vocabulary_order() -> None:
    # Columns deliberately differ from the vocabulary's order.
    evaluation = _evaluate(FakePredictor(["pos", "neg", "neu"]))

    assert evaluation.accuracy == pytest.approx(6 / 8)
    # Rows = true label, columns = predicted, both in VOCAB order.
    assert evaluation.confusion == [[2, 1, 0], [0, 1, 1], [0, 0, 3]]
    assert list(evaluation.per_class) == VOCAB
    assert evaluation.per_class["neg"]["recall"] == pytest.approx(2 / 3)
    assert evaluation.per_class["pos"]["precision"] == pytest.approx(3 / 4)
    f1 = [2 * 2 / (2 * 2 + 1), 2 * 1 / (2 * 1 + 2), 2 * 3 / (2 * 3 + 1)]
    assert evaluation.macro_f1 == pytest.approx(np.mean(f1))
    assert evaluation.n_test == 8
    assert evaluation.size_bytes == 1234
    assert (evaluation.name, evaluation.family, evaluation.form) == (
        "fake",
        "student",
        "onnx-int8",
    )
    assert evaluation.extra["labels"] == VOCAB
    assert evaluation.latency_p95_ms >= evaluation.latency_p50_ms > 0
    assert evaluation.throughput_per_s > 0


def test_evaluate_predictor_defaults_to_the_predictor_label_order() -> None:
    evaluation = evaluate_predictor(
        "fake",
        "student",
        "torch-fp32",
        FakePredictor(["pos", "neg", "neu"]),
        TEXTS,
        GOLD,
        10,
        latency_texts=LATENCY_TEXTS,
        num_threads=1,
        **FAST,
    )
    assert list(evaluation.per_class) == ["pos", "neg", "neu"]
    assert evaluation.confusion[0] == [3, 0, 0]  # true "pos"


def test_latency_is_batch_one_on_latency_texts_and_throughput_batch_32() -> None:
    predictor = FakePredictor(VOCAB)
    _evaluate(predictor, latency_repeats=7, warmup=3, throughput_batches=2)

    single = [texts for texts, _ in predictor.calls if len(texts) == 1]
    # warm-up + timed calls, one real latency text each.
    assert len(single) == 3 + 7
    assert all(texts[0] in LATENCY_TEXTS for texts in single)
    full = [
        texts for texts, _ in predictor.calls if len(texts) == THROUGHPUT_BATCH_SIZE
    ]
    # 2 timed batches + measure_throughput's 2 warm-up batches, test texts cycled.
    assert len(full) == 4
    assert all(set(texts) <= set(TEXTS) for texts in full)
    # The quality pass sees every test text exactly once.
    assert [texts for texts, _ in predictor.calls if len(texts) == len(TEXTS)] == [
        TEXTS
    ]


def test_predictions_are_chunked() -> None:
    predictor = FakePredictor(VOCAB)
    evaluation = _evaluate(predictor, predict_chunk_size=3)
    assert [len(t) for t, _ in predictor.calls[:3]] == [3, 3, 2]
    assert evaluation.accuracy == pytest.approx(6 / 8)


def test_torch_threads_are_set_for_the_run_and_restored() -> None:
    before = torch.get_num_threads()
    wanted = 2 if before != 2 else 1
    predictor = FakePredictor(VOCAB)
    evaluation = _evaluate(predictor, num_threads=wanted)
    assert {threads for _, threads in predictor.calls} == {wanted}
    assert evaluation.num_threads == wanted
    assert torch.get_num_threads() == before


def test_a_scorer_predicts_the_test_split_while_the_predictor_is_timed() -> None:
    timed = FakePredictor(VOCAB, num_threads=1)
    scorer = FakePredictor(VOCAB, num_threads=2)
    evaluation = _evaluate(timed, scorer=scorer, scoring_threads=2)

    # The scorer sees every test text once, with its own thread count; the timed
    # predictor only batch-1 and throughput calls, with num_threads.
    assert scorer.calls == [(TEXTS, 2)]
    assert {len(texts) for texts, _ in timed.calls} == {1, THROUGHPUT_BATCH_SIZE}
    assert {threads for _, threads in timed.calls} == {1}
    assert evaluation.accuracy == pytest.approx(6 / 8)
    assert evaluation.num_threads == 1
    assert evaluation.extra["scoring_threads"] == 2


@pytest.mark.parametrize(
    ("scorer", "message"),
    [
        (FakePredictor(VOCAB, num_threads=1), "scorer runs with 1 threads"),
        (FakePredictor(["pos", "neg", "neu"], num_threads=2), "scorer's labels"),
    ],
)
def test_a_scorer_must_match_its_threads_and_labels(
    scorer: FakePredictor, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _evaluate(FakePredictor(VOCAB), scorer=scorer, scoring_threads=2)


def test_torch_threads_are_restored_when_the_model_fails() -> None:
    before = torch.get_num_threads()
    wanted = 2 if before != 2 else 1
    with pytest.raises(RuntimeError, match="model crashed"):
        _evaluate(FailingPredictor(VOCAB), num_threads=wanted)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_threads": 2}, "predictor runs with 1 threads"),
        ({"latency_texts": []}, "latency_texts"),
        ({"labels": ["neg", "neu", "other"]}, "differ from predictor"),
        ({"num_threads": 0}, "must be >= 1"),
    ],
)
def test_evaluate_predictor_rejects_bad_settings(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message):
        _evaluate(FakePredictor(VOCAB, num_threads=1), **kwargs)


def test_evaluate_predictor_rejects_bad_labels() -> None:
    predictor = FakePredictor(VOCAB)
    with pytest.raises(ValueError, match="not in"):
        evaluate_predictor(
            "fake", "student", "onnx-int8", predictor, TEXTS, ["angry"] * 8, 10,
            latency_texts=LATENCY_TEXTS, num_threads=1, **FAST,
        )  # fmt: skip
    with pytest.raises(ValueError, match="one label each"):
        evaluate_predictor(
            "fake", "student", "onnx-int8", predictor, TEXTS, GOLD[:-1], 10,
            latency_texts=LATENCY_TEXTS, num_threads=1, **FAST,
        )  # fmt: skip


def test_evaluation_round_trips_through_json() -> None:
    evaluation = _evaluate(FakePredictor(VOCAB))
    restored = ModelEvaluation.from_dict(json.loads(json.dumps(evaluation.to_dict())))
    assert restored == evaluation


def test_from_dict_names_missing_fields() -> None:
    data = _evaluate(FakePredictor(VOCAB)).to_dict()
    del data["macro_f1"]
    with pytest.raises(ValueError, match="macro_f1"):
        ModelEvaluation.from_dict(data)


WORDS = {
    "negative": ["awful", "broken", "late", "refund", "worst"],
    "neutral": ["delivery", "tuesday", "box", "order", "store"],
    "positive": ["great", "love", "perfect", "happy", "best"],
}


def _corpus(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    names = sorted(WORDS)
    texts, labels = [], []
    for i in range(n):
        label = names[i % 3]
        words = [*rng.choice(WORDS[label], size=3), *rng.choice(["the", "a"], size=2)]
        texts.append(" ".join(rng.permutation(words)))
        labels.append(label)
    return texts, labels


def test_real_baseline_goes_through_the_same_path() -> None:
    train_texts, train_labels = _corpus(60, seed=0)
    test_texts, test_labels = _corpus(30, seed=1)
    pipeline, _ = fit_baseline(train_texts, train_labels, test_texts, test_labels)
    predictor = BaselinePredictor(pipeline)
    vocab = ["positive", "neutral", "negative"]  # not sklearn's alphabetical order

    evaluation = evaluate_predictor(
        "baseline", "baseline", "sklearn", predictor, test_texts, test_labels, 5000,
        latency_texts=test_texts[:5], num_threads=1, labels=vocab, **FAST,
    )  # fmt: skip

    predicted = predict_labels(predictor, test_texts)
    correct = sum(p == t for p, t in zip(predicted, test_labels, strict=True))
    assert evaluation.accuracy == pytest.approx(correct / len(test_texts))
    assert evaluation.macro_f1 > 0.8  # the words separate the classes
    assert list(evaluation.per_class) == vocab
    confusion = np.asarray(evaluation.confusion)
    assert confusion.sum() == len(test_texts)
    # Row sums are the true label counts, in `vocab` order.
    assert confusion.sum(axis=1).tolist() == [test_labels.count(v) for v in vocab]
    assert confusion.sum(axis=0).tolist() == [predicted.count(v) for v in vocab]
