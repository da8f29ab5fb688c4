"""Membership inference: a model that memorised its rows leaks them; the audit says so."""

from __future__ import annotations

import numpy as np
import pytest

from distillery.ml.report.baseline import BaselineGrid, BaselinePredictor, fit_baseline
from distillery.ml.report.privacy import (
    PrivacyOptions,
    audit_model,
    audit_release,
    label_losses,
    membership_audit,
)


def _rows(seed: int, count: int) -> tuple[list[str], list[str]]:
    """Texts of random words with random labels: nothing to learn but the rows."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(400)]
    texts = [" ".join(rng.choice(words, size=8)) for _ in range(count)]
    return texts, [("neg", "pos")[i] for i in rng.integers(0, 2, count)]


def _model(texts: list[str], labels: list[str], c: float) -> BaselinePredictor:
    grid = BaselineGrid.from_dict(
        {"word_ngrams": [[1, 1]], "char_ngrams": [None], "C": [c]}
    )
    pipeline, _ = fit_baseline(texts, labels, texts[:20], labels[:20], grid)
    return BaselinePredictor(pipeline)


def _ids(model: BaselinePredictor, labels: list[str]) -> list[int]:
    return [model.labels.index(label) for label in labels]


def test_a_memorising_model_leaks_membership() -> None:
    members, outsiders = _rows(0, 150), _rows(1, 150)
    model = _model(*members, c=100.0)
    audit = audit_model(
        model,
        (members[0], _ids(model, members[1])),
        (outsiders[0], _ids(model, outsiders[1])),
    )
    assert audit["auc"] > 0.8 and audit["advantage"] > 0.5
    assert audit["member_loss"] < audit["nonmember_loss"]
    assert audit["members"] == audit["nonmembers"] == 150


def test_two_unseen_groups_cannot_be_told_apart() -> None:
    model = _model(*_rows(2, 150), c=100.0)
    first, second = _rows(3, 300), _rows(4, 300)
    audit = audit_model(
        model, (first[0], _ids(model, first[1])), (second[0], _ids(model, second[1]))
    )
    assert audit["auc"] == pytest.approx(0.5, abs=0.08)


def test_losses_are_the_true_labels_cross_entropy_and_bad_input_is_refused() -> None:
    model = _model(*_rows(5, 60), c=1.0)
    texts = ["w1 w2", "w3"]
    probabilities = model.predict_proba(texts)
    assert label_losses(model, texts, [0, 1]) == pytest.approx(
        -np.log([probabilities[0, 0], probabilities[1, 1]])
    )
    with pytest.raises(ValueError, match="labels must be in 0..1"):
        label_losses(model, texts, [0, 2])
    with pytest.raises(ValueError, match="equal, non-empty"):
        label_losses(model, texts, [0])
    with pytest.raises(ValueError, match="members and of non-members"):
        membership_audit(np.array([0.1]), np.array([]))
    perfect = membership_audit(np.array([0.1, 0.2]), np.array([0.9, 1.0]))
    assert perfect["auc"] == 1.0 and perfect["tpr_at_1pct_fpr"] == 1.0


def test_the_release_audit_scores_every_model_on_the_same_rows() -> None:
    members, outsiders = _rows(6, 120), _rows(7, 200)
    memorising, plain = _model(*members, c=100.0), _model(*members, c=0.05)
    train = (members[0], _ids(memorising, members[1]))
    test = (outsiders[0], _ids(memorising, outsiders[1]))
    report = audit_release(
        {"student": plain, "teacher": memorising}, train, test, PrivacyOptions(rows=100)
    )
    assert report["rows"] == 100
    assert report["student"]["members"] == report["teacher"]["members"] == 100
    assert report["teacher"]["auc"] > report["student"]["auc"]
    with pytest.raises(ValueError, match="privacy.rows must be >= 1"):
        PrivacyOptions(rows=0)
