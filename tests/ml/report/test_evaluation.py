"""One evaluation path for every model form; ratios, gates and model selection."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distillery.ml.report.baseline import BaselinePredictor, fit_baseline
from distillery.ml.report.evaluation import (
    THROUGHPUT_BATCH_SIZE,
    GateError,
    Gates,
    ModelEvaluation,
    check_gates,
    evaluate_predictor,
    ratios,
    select_best,
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


def test_model_evaluation_checks_its_confusion_matrix() -> None:
    with pytest.raises(ValueError, match="n_test"):
        make_evaluation("x", macro_f1=0.9, size_bytes=10, p50=1.0, n_test=5)


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


# ----------------------------------------------------------------- ratios and gates


def make_evaluation(
    name: str,
    *,
    macro_f1: float,
    size_bytes: int,
    p50: float,
    throughput: float = 100.0,
    n_test: int = 10,
    form: str = "onnx-int8",
) -> ModelEvaluation:
    """A hand-made evaluation; only the gate-relevant numbers matter."""
    return ModelEvaluation(
        name=name,
        family="student",
        form=form,
        accuracy=macro_f1,
        macro_f1=macro_f1,
        per_class={},
        confusion=[[5, 0], [0, 5]],
        size_bytes=size_bytes,
        latency_p50_ms=p50,
        latency_p95_ms=p50 * 1.5,
        throughput_per_s=throughput,
        num_threads=1,
        n_test=n_test,
    )


@pytest.fixture
def teacher() -> ModelEvaluation:
    return make_evaluation(
        "teacher", macro_f1=0.80, size_bytes=90_000_000, p50=10.0, form="torch-fp32"
    )


GATES = Gates(min_f1_retained=0.97, min_size_ratio=4.0, min_latency_ratio=2.0)


def test_ratios(teacher: ModelEvaluation) -> None:
    student = make_evaluation(
        "s", macro_f1=0.78, size_bytes=15_000_000, p50=2.5, throughput=450.0
    )
    assert ratios(student, teacher) == pytest.approx(
        {
            "f1_retained": 0.975,
            "size_ratio": 6.0,
            "latency_ratio": 4.0,
            "throughput_ratio": 4.5,
        }
    )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"macro_f1": 0.7696, "size_bytes": 10_000_000, "p50": 2.0},
            ["f1_retained 0.962 < 0.970"],
        ),
        (
            {"macro_f1": 0.79, "size_bytes": 30_000_000, "p50": 2.0},
            ["size_ratio 3.00 < 4.00"],
        ),
        (
            {"macro_f1": 0.79, "size_bytes": 10_000_000, "p50": 8.0},
            ["latency_ratio 1.25 < 2.00"],
        ),
        (
            {"macro_f1": 0.70, "size_bytes": 45_000_000, "p50": 20.0},
            [
                "f1_retained 0.875 < 0.970",
                "size_ratio 2.00 < 4.00",
                "latency_ratio 0.50 < 2.00",
            ],
        ),
        ({"macro_f1": 0.79, "size_bytes": 10_000_000, "p50": 2.0}, []),
    ],
)
def test_check_gates_names_each_missed_gate(
    teacher: ModelEvaluation, kwargs, expected
) -> None:
    assert check_gates(make_evaluation("c", **kwargs), teacher, GATES) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_f1_retained": 0.0},
        {"min_f1_retained": 1.2},
        {"min_size_ratio": -1.0},
        {"min_latency_ratio": float("inf")},
        {"min_size_ratio": "4"},
    ],
)
def test_gates_validate_themselves(kwargs) -> None:
    with pytest.raises(ValueError, match="Gates"):
        Gates(**kwargs)


def test_select_best_picks_the_passing_candidate_with_the_best_f1(
    teacher: ModelEvaluation,
) -> None:
    candidates = [
        make_evaluation("ok", macro_f1=0.785, size_bytes=10_000_000, p50=2.0),
        make_evaluation("best", macro_f1=0.790, size_bytes=20_000_000, p50=4.0),
        # Higher F1 but too slow: must not win.
        make_evaluation("slow", macro_f1=0.800, size_bytes=10_000_000, p50=9.0),
    ]
    assert select_best(candidates, teacher, GATES).name == "best"


def test_select_best_breaks_ties_by_size(teacher: ModelEvaluation) -> None:
    candidates = [
        make_evaluation("big", macro_f1=0.79, size_bytes=20_000_000, p50=2.0),
        make_evaluation("small", macro_f1=0.79, size_bytes=12_000_000, p50=3.0),
        make_evaluation("bigger", macro_f1=0.79, size_bytes=22_000_000, p50=1.0),
    ]
    assert select_best(candidates, teacher, GATES).name == "small"


def test_select_best_raises_a_table_of_every_candidate(
    teacher: ModelEvaluation,
) -> None:
    candidates = [
        make_evaluation("weak", macro_f1=0.7696, size_bytes=10_000_000, p50=2.0),
        make_evaluation("fat", macro_f1=0.792, size_bytes=30_000_000, p50=2.0),
        make_evaluation("slow", macro_f1=0.79, size_bytes=10_000_000, p50=8.0),
    ]
    with pytest.raises(GateError) as info:
        select_best(candidates, teacher, GATES)

    assert isinstance(info.value, RuntimeError)
    lines = str(info.value).splitlines()
    assert "f1_retained" in lines[1] and "missed" in lines[1]
    rows = {line.split()[0]: line for line in lines[3:]}
    assert set(rows) == {"weak", "fat", "slow"}
    assert "f1_retained 0.962 < 0.970" in rows["weak"]
    assert "size_ratio 3.00 < 4.00" in rows["fat"]
    assert "latency_ratio 1.25 < 2.00" in rows["slow"]
    # Each row shows the candidate's three ratios.
    assert rows["fat"].split()[2:5] == ["0.990", "3.00", "5.00"]
    assert info.value.missed["slow"] == ["latency_ratio 1.25 < 2.00"]


def test_select_best_needs_candidates(teacher: ModelEvaluation) -> None:
    with pytest.raises(ValueError, match="at least one"):
        select_best([], teacher, GATES)
