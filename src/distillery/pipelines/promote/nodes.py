"""Promote nodes: champion vs challenger on the same rows, beyond the noise."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from distillery.ml.serve.registry import promote_if_better
from distillery.ml.train.options import options_from_params
from distillery.tracking import as_metrics

SPLITS = ("test", "val")


@dataclass(frozen=True)
class PromoteOptions:
    """How much better a challenger must be, on which split, to become champion."""

    min_improvement: float = 0.0  # macro-F1 gain over the champion, strictly exceeded
    split: str = "test"  # the rows both models are scored on
    confidence: float | None = 0.95  # the gain's paired-bootstrap lower bound decides
    resamples: int = 1000  # bootstrap draws
    seed: int = 0  # seed of the draws

    def __post_init__(self) -> None:
        if self.min_improvement < 0:
            raise ValueError(
                f"promote_options.min_improvement must be >= 0, got {self.min_improvement}"
            )
        if self.split not in SPLITS:
            raise ValueError(
                f"promote_options.split must be one of {SPLITS}, got {self.split!r}"
            )
        if self.confidence is not None and not 0 < self.confidence < 1:
            raise ValueError(
                "promote_options.confidence must be in (0, 1) or null, "
                f"got {self.confidence}"
            )
        if self.resamples < 1:
            raise ValueError(
                f"promote_options.resamples must be >= 1, got {self.resamples}"
            )

    @property
    def bootstrap(self) -> dict[str, Any] | None:
        """The paired bootstrap's settings; None compares point estimates alone."""
        if self.confidence is None:
            return None
        return {
            "confidence": self.confidence,
            "resamples": self.resamples,
            "seed": self.seed,
        }


def promote_challenger(  # noqa: PLR0913 - the student, both splits, the settings
    registered_student: dict[str, Any],
    val: pd.DataFrame,
    test: pd.DataFrame,
    label_vocab: dict[str, Any],
    registry: dict[str, Any],
    promote_options: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, float]]:
    """Move the ``champion`` alias to this run's student if it is better beyond noise.

    Both models are scored through their registered pyfuncs on the same split: test
    by default, which no choice of the run used (students are chosen on validation).

    Returns:
        The promotion report (``promotion.json``) and its MLflow metrics.
    """
    options = options_from_params(PromoteOptions, promote_options, "promote_options")
    rows = test if options.split == "test" else val
    report = promote_if_better(
        registry["name"],
        registered_student["version"],
        registry["champion_alias"],
        rows["text"].tolist(),
        rows["label"].tolist(),
        list(label_vocab["labels"]),
        min_improvement=options.min_improvement,
        bootstrap=options.bootstrap,
    )
    report = {**report, "split": options.split}
    metrics = {
        "promoted": report["promoted"],
        "challenger_macro_f1": report["challenger"]["macro_f1"],
    }
    if report["champion"] is not None:
        metrics["champion_macro_f1"] = report["champion"]["macro_f1"]
    if report["interval"] is not None:
        metrics["gain_low"] = report["interval"]["low"]
        metrics["gain_high"] = report["interval"]["high"]
    return report, as_metrics(metrics)
