"""Data profiles, drift and the scheduled retraining decision."""

import pytest

from distillery.ml.data.drift import (
    RetrainThresholds,
    data_profile,
    decide_retraining,
    profile_drift,
)

TEXTS = ["a" * 10, "b" * 20, "c" * 30, "d" * 40]
LABELS = ["neg", "pos", "pos", "neu"]


def test_profile_has_shares_and_length_quantiles() -> None:
    profile = data_profile(TEXTS, LABELS)
    assert profile["rows"] == 4
    assert profile["label_shares"] == {"neg": 0.25, "neu": 0.25, "pos": 0.5}
    assert profile["length"]["mean"] == 25.0
    assert profile["length"]["p50"] == 25.0
    assert profile["length"]["p10"] == pytest.approx(13.0)


def test_drift_is_zero_for_the_same_data_and_counts_new_labels_fully() -> None:
    profile = data_profile(TEXTS, LABELS)
    assert profile_drift(profile, profile) == {"label_shift": 0.0, "length_shift": 0.0}
    other = data_profile(TEXTS, ["x", "x", "x", "x"])
    assert profile_drift(profile, other)["label_shift"] == 1.0
    longer = data_profile([t * 2 for t in TEXTS], LABELS)
    assert profile_drift(profile, longer)["length_shift"] == 1.0


def _reference(texts: list[str], labels: list[str], sha: str = "old") -> dict:
    return {"sha256": sha, "teacher_profile": data_profile(texts, labels), "version": 3}


def test_decision_branches() -> None:
    thresholds = RetrainThresholds(max_label_shift=0.05, max_length_shift=0.1)
    current = data_profile(TEXTS, LABELS)

    first = decide_retraining("new", current, None, thresholds)
    assert first["action"] == "full" and first["drift"] is None

    same = decide_retraining("old", current, _reference(TEXTS, LABELS), thresholds)
    assert same["action"] == "skip" and same["reference"]["version"] == 3

    # 1 row in 40 changes class: a label shift of 0.025, within 0.05.
    texts, labels = TEXTS * 10, LABELS * 10
    nudged = data_profile(texts, ["neu", *labels[1:]])
    small = decide_retraining("new", nudged, _reference(texts, labels), thresholds)
    assert small["action"] == "redistill"
    assert small["drift"]["label_shift"] == pytest.approx(0.025)

    # Half the rows change class: beyond the threshold, retrain the teacher.
    moved = data_profile(texts, ["neu"] * 20 + labels[20:])
    large = decide_retraining("new", moved, _reference(texts, labels), thresholds)
    assert large["action"] == "full" and "label shift" in large["reason"]

    # Texts twice as long: beyond the length threshold.
    longer = data_profile([t * 2 for t in TEXTS], LABELS)
    long = decide_retraining("new", longer, _reference(TEXTS, LABELS), thresholds)
    assert long["action"] == "full" and long["drift"]["length_shift"] == 1.0


def test_thresholds_reject_negative_values() -> None:
    with pytest.raises(ValueError, match="max_label_shift"):
        RetrainThresholds(max_label_shift=-0.1)
