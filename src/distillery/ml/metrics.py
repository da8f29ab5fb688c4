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
