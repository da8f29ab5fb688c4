"""Metrics: macro-F1 as sklearn computes it, and the paired bootstrap of a difference."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from distillery.ml.metrics import classification_metrics, paired_bootstrap


def _labels(seed: int, rows: int = 600, accuracy: float = 0.8) -> tuple:
    rng = np.random.default_rng(seed)
    gold = rng.integers(0, 3, rows)
    pred = np.where(rng.random(rows) < accuracy, gold, rng.integers(0, 3, rows))
    return gold, pred


def test_bootstrap_scores_each_model_as_classification_metrics_does() -> None:
    gold, a = _labels(0)
    _, b = _labels(1)
    b = b.copy()
    b[:5] = -1  # a name outside the vocabulary: wrong, never class 0
    result = paired_bootstrap(gold, a, b, 3, resamples=50)
    names = ["x", "y", "z"]
    assert result["a"] == pytest.approx(
        classification_metrics(gold, a, names)["macro_f1"]
    )
    assert result["b"] == pytest.approx(
        classification_metrics(gold, b, names)["macro_f1"]
    )
    assert result["a"] == pytest.approx(f1_score(gold, a, average="macro"))
    assert result["difference"] == pytest.approx(result["b"] - result["a"])


def test_a_clearly_better_model_has_an_interval_above_zero() -> None:
    gold, worse = _labels(2, accuracy=0.6)
    better = np.where(np.random.default_rng(3).random(gold.size) < 0.9, gold, worse)
    result = paired_bootstrap(gold, worse, better, 3, resamples=500, seed=4)
    assert 0 < result["low"] < result["difference"] < result["high"]


def test_the_same_model_twice_has_an_interval_of_zero_width() -> None:
    gold, pred = _labels(5)
    result = paired_bootstrap(gold, pred, pred.copy(), 3, resamples=200)
    assert result["low"] == result["high"] == result["difference"] == 0.0


def test_models_that_differ_on_a_few_rows_have_an_interval_around_zero() -> None:
    gold, a = _labels(6)
    b = a.copy()
    right, wrong = np.flatnonzero(a == gold), np.flatnonzero(a != gold)
    b[right[:6]] = (gold[right[:6]] + 1) % 3  # b loses six rows a gets ...
    b[wrong[:6]] = gold[wrong[:6]]  # ... and wins six a misses: 2% of rows move
    result = paired_bootstrap(gold, a, b, 3, resamples=1000, seed=8)
    assert result["low"] < 0 < result["high"]


def test_the_interval_is_seeded() -> None:
    gold, a = _labels(9)
    _, b = _labels(10)
    first = paired_bootstrap(gold, a, b, 3, resamples=100, seed=3)
    assert paired_bootstrap(gold, a, b, 3, resamples=100, seed=3) == first
    assert paired_bootstrap(gold, a, b, 3, resamples=100, seed=4) != first


@pytest.mark.parametrize(
    ("pred_b", "settings", "message"),
    [
        ([0, 1], {}, "equal, non-empty"),
        ([0, 1, 2], {"resamples": 0}, "resamples >= 1"),
        ([0, 1, 2], {"confidence": 1.0}, "0 < confidence < 1"),
    ],
)
def test_bad_bootstrap_input_is_refused(
    pred_b: list[int], settings: dict, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        paired_bootstrap([0, 1, 2], [0, 1, 2], pred_b, 3, **settings)
