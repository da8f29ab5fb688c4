"""Classification metrics shared by validation, evaluation and compression checks."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support


def classification_metrics(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    labels: list[str],
) -> dict[str, float | dict[str, dict[str, float]]]:
    """Accuracy, macro-F1 and per-class precision/recall/F1.

    Every class in ``labels`` is scored, present in ``y_true`` or not, so that the
    macro average means the same thing on every split; an undefined ratio counts as 0.

    Args:
        y_true: Gold label indices into ``labels``.
        y_pred: Predicted label indices.
        labels: The label vocabulary.

    Returns:
        ``{"accuracy": float, "macro_f1": float, "per_class": {label: {"precision",
        "recall", "f1", "support"}}}``.

    Raises:
        ValueError: If the inputs differ in length or are empty.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(
            f"need equal, non-empty label arrays, got {y_true.shape} and {y_pred.shape}"
        )
    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=ids, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(
            f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)
        ),
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(labels)
        },
    }


def _confusions(
    y_true: np.ndarray, y_pred: np.ndarray, num_labels: int, draws: np.ndarray
) -> np.ndarray:
    """Confusion counts of each draw of rows, ``(D, K, K + 1)``, gold class as row.

    A predicted id outside ``0 .. K - 1`` lands in the extra column: a false negative
    of its gold class, never a hit.
    """
    width = num_labels + 1
    valid = (y_pred >= 0) & (y_pred < num_labels)
    cells = y_true * width + np.where(valid, y_pred, num_labels)  # (N,)
    counts = np.stack(
        [np.bincount(cells[rows], minlength=num_labels * width) for rows in draws]
    )
    return counts.reshape(len(draws), num_labels, width)


def _macro_f1(confusions: np.ndarray) -> np.ndarray:
    """Macro-F1 of ``(D, K, K + 1)`` confusion counts; an undefined F1 counts as 0."""
    num_labels = confusions.shape[1]
    hits = np.diagonal(confusions[..., :num_labels], axis1=1, axis2=2)  # (D, K)
    # F1 = 2 TP / (gold + predicted)
    total = confusions.sum(axis=2) + confusions[..., :num_labels].sum(axis=1)
    f1 = np.divide(2 * hits, total, out=np.zeros(hits.shape), where=total > 0)
    return f1.mean(axis=1)


def paired_bootstrap(  # noqa: PLR0913 - the rows, then how to resample them
    y_true: Sequence[int] | np.ndarray,
    pred_a: Sequence[int] | np.ndarray,
    pred_b: Sequence[int] | np.ndarray,
    num_labels: int,
    *,
    resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, float]:
    """Macro-F1 of ``b`` minus that of ``a`` on the same rows, with a paired interval.

    Each resample draws rows with replacement and scores both models on the same
    draw, so the sampling noise the two share cancels out of their difference.

    Args:
        y_true: Gold label ids, ``0 .. num_labels - 1``.
        pred_a: The first model's predicted ids (the reference, e.g. a champion); an
            id outside the labels (e.g. -1 for an unknown name) is a wrong answer.
        pred_b: The second model's, on the same rows.
        num_labels: How many classes there are.
        resamples: Bootstrap draws.
        confidence: Coverage of the two-sided percentile interval.
        seed: Seed of the draws.

    Returns:
        ``{"a", "b", "difference", "low", "high", "confidence", "resamples"}``: the
        two macro-F1s and their difference on all rows, and the interval's bounds.

    Raises:
        ValueError: On arrays of different lengths, no rows, or a setting out of range.
    """
    y_true, pred_a, pred_b = (
        np.asarray(v, dtype=np.int64) for v in (y_true, pred_a, pred_b)
    )
    if not y_true.shape == pred_a.shape == pred_b.shape or y_true.size == 0:
        raise ValueError(
            "need three equal, non-empty label arrays, got "
            f"{y_true.shape}, {pred_a.shape} and {pred_b.shape}"
        )
    if resamples < 1 or not 0 < confidence < 1:
        raise ValueError(
            f"need resamples >= 1 and 0 < confidence < 1, got {resamples}, {confidence}"
        )
    everything = np.arange(y_true.size)[None]  # (1, N)
    draws = np.random.default_rng(seed).integers(
        0, y_true.size, (resamples, y_true.size)
    )
    whole, resampled = {}, {}
    for name, pred in (("a", pred_a), ("b", pred_b)):
        whole[name] = float(
            _macro_f1(_confusions(y_true, pred, num_labels, everything))[0]
        )
        resampled[name] = _macro_f1(_confusions(y_true, pred, num_labels, draws))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(resampled["b"] - resampled["a"], [tail, 100 - tail])
    return {
        "a": whole["a"],
        "b": whole["b"],
        "difference": whole["b"] - whole["a"],
        "low": float(low),
        "high": float(high),
        "confidence": confidence,
        "resamples": resamples,
    }
