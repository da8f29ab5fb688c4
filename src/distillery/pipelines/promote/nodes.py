"""Promote nodes: champion vs challenger on the same test split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from distillery.ml.serve.registry import promote_if_better
from distillery.ml.train.options import options_from_params
from distillery.tracking import as_metrics


@dataclass(frozen=True)
class PromoteOptions:
    """How much better a challenger must be to become champion."""

    min_improvement: float = 0.0  # macro-F1 gain over the champion, strictly exceeded

    def __post_init__(self) -> None:
        if self.min_improvement < 0:
            raise ValueError(
                f"promote_options.min_improvement must be >= 0, got {self.min_improvement}"
            )


def promote_challenger(
    registered_student: dict[str, Any],
    test: pd.DataFrame,
    label_vocab: dict[str, Any],
    registry: dict[str, Any],
    promote_options: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, float]]:
    """Move the ``champion`` alias to this run's student if it scores higher.

    Both models are scored through their registered pyfuncs on this run's test split.

    Returns:
        The promotion report (``promotion.json``) and its MLflow metrics.
    """
    options = options_from_params(PromoteOptions, promote_options, "promote_options")
    report = promote_if_better(
        registry["name"],
        registered_student["version"],
        registry["champion_alias"],
        test["text"].tolist(),
        test["label"].tolist(),
        list(label_vocab["labels"]),
        min_improvement=options.min_improvement,
    )
    metrics = {
        "promoted": report["promoted"],
        "challenger_macro_f1": report["challenger"]["macro_f1"],
    }
    if report["champion"] is not None:
        metrics["champion_macro_f1"] = report["champion"]["macro_f1"]
    return report, as_metrics(metrics)
