"""Data profiles and the retraining decision of the scheduled DAG.

A *profile* is what a model's training data looked like, small enough to live in a
registry tag: row count, label shares and text-length quantiles (characters). The
scheduled retraining compares this week's validated corpus with the latest registered
version (its corpus hash, and the profile of the data its teacher was fine-tuned on)
and decides:

``skip``       the corpus hash is the latest version's: training is deterministic,
               so retraining would rebuild the same model.
``redistill``  the data moved a little from the teacher's (label balance and text
               length within the thresholds): reuse the teacher, distil a new student.
``full``       no version to compare with, or the data moved past a threshold:
               fine-tune a new teacher, then distil.

Drift is measured from the teacher's data, not last week's, so that small weekly
changes cannot add up to a large one without the teacher ever being retrained.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

ACTIONS = ("skip", "redistill", "full")
LENGTH_QUANTILES = (0.1, 0.5, 0.9)


def data_profile(texts: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Rows, label shares and text-length quantiles of a labelled corpus.

    Returns:
        ``{"rows", "label_shares": {label: share}, "length": {"mean", "p10", "p50",
        "p90"}}``, rounded to 6 decimals so that the JSON is stable.
    """
    lengths = np.fromiter((len(t) for t in texts), dtype=np.float64, count=len(texts))
    values, counts = np.unique(np.asarray(labels, dtype=str), return_counts=True)
    shares = counts / max(counts.sum(), 1)
    quantiles = (
        np.quantile(lengths, LENGTH_QUANTILES)
        if len(lengths)
        else np.zeros(len(LENGTH_QUANTILES))
    )
    return {
        "rows": len(lengths),
        "label_shares": {
            str(v): round(float(s), 6) for v, s in zip(values, shares, strict=True)
        },
        "length": {
            "mean": round(float(lengths.mean()) if len(lengths) else 0.0, 6),
            **{
                f"p{round(q * 100)}": round(float(x), 6)
                for q, x in zip(LENGTH_QUANTILES, quantiles, strict=True)
            },
        },
    }


def profile_drift(
    reference: Mapping[str, Any], current: Mapping[str, Any]
) -> dict[str, float]:
    """How far ``current`` moved from ``reference``.

    Returns:
        ``label_shift``: total variation distance between the label shares (0 = same
        balance, 1 = disjoint labels; a new or vanished label counts fully);
        ``length_shift``: the largest relative change of the mean or a quantile of
        the text length.
    """
    ref_shares, cur_shares = reference["label_shares"], current["label_shares"]
    labels = set(ref_shares) | set(cur_shares)
    label_shift = 0.5 * sum(
        abs(ref_shares.get(k, 0.0) - cur_shares.get(k, 0.0)) for k in labels
    )
    length_shift = max(
        abs(current["length"][k] - ref) / max(ref, 1.0)
        for k, ref in reference["length"].items()
    )
    return {
        "label_shift": round(float(label_shift), 6),
        "length_shift": round(float(length_shift), 6),
    }


@dataclass(frozen=True)
class RetrainThresholds:
    """Drift within both thresholds re-distils; beyond either, retrains in full."""

    max_label_shift: float = 0.05
    max_length_shift: float = 0.10

    def __post_init__(self) -> None:
        for name in ("max_label_shift", "max_length_shift"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


def decide_retraining(
    current_sha256: str,
    current_profile: Mapping[str, Any],
    reference: Mapping[str, Any] | None,
    thresholds: RetrainThresholds,
) -> dict[str, Any]:
    """The action for this corpus given the latest version's data (``reference``).

    Args:
        current_sha256: Hash of the corpus just ingested.
        current_profile: :func:`data_profile` of its validated rows.
        reference: ``{"sha256", "teacher_profile", "version"}`` of the latest
            registered version, or None when there is none (or it has no data tags).
        thresholds: Drift limits for re-distilling only.

    Returns:
        ``{"action", "reason", "drift", "thresholds", "sha256", "reference"}``.
    """
    drift: dict[str, float] | None = None
    if reference is None:
        action, reason = "full", "no registered version with data tags to compare with"
    elif reference["sha256"] == current_sha256:
        action, reason = "skip", "corpus hash equals the latest version's"
    else:
        drift = profile_drift(reference["teacher_profile"], current_profile)
        within = (
            drift["label_shift"] <= thresholds.max_label_shift
            and drift["length_shift"] <= thresholds.max_length_shift
        )
        action = "redistill" if within else "full"
        reason = (
            "vs the teacher's data: "
            f"label shift {drift['label_shift']:.4f} (max "
            f"{thresholds.max_label_shift}), length shift {drift['length_shift']:.4f} "
            f"(max {thresholds.max_length_shift})"
        )
    return {
        "action": action,
        "reason": reason,
        "drift": drift,
        "thresholds": {
            "max_label_shift": thresholds.max_label_shift,
            "max_length_shift": thresholds.max_length_shift,
        },
        "sha256": current_sha256,
        "reference": None
        if reference is None
        else {"sha256": reference["sha256"], "version": reference.get("version")},
    }
