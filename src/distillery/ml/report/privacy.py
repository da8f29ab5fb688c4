"""What a model may leak about its training rows: a membership-inference audit.

A loss-threshold attack (Yeom et al., 2018): a model is more confident on the rows it
was trained on than on rows it never saw, so an attacker who can query it guesses
"member" when the loss on a row's true label is low. The audit scores the same number
of training rows and held-out rows and reports the attack's ROC AUC: 0.5 means the
loss tells members from non-members no better than a coin, 1.0 that it always does.
A low AUC is evidence against this attack, not a guarantee against every attack.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from distillery.ml.serve.inference import Predictor

_EPSILON = 1e-12  # keeps log(0) finite for a confidently wrong model


def label_losses(
    predictor: Predictor, texts: Sequence[str], labels: Sequence[int]
) -> np.ndarray:
    """Cross-entropy of each text's true label under the model, ``(N,)``.

    Raises:
        ValueError: If texts and labels differ in length or a label is out of range.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(texts) != len(labels) or not len(labels):
        raise ValueError(
            f"need equal, non-empty texts and labels: {len(texts)}, {len(labels)}"
        )
    if labels.min() < 0 or labels.max() >= len(predictor.labels):
        raise ValueError(f"labels must be in 0..{len(predictor.labels) - 1}")
    probabilities = predictor.predict_proba(list(texts))  # (N, C)
    chosen = probabilities[np.arange(len(labels)), labels]
    return -np.log(np.clip(chosen, _EPSILON, 1.0))


def membership_audit(
    member_losses: np.ndarray, nonmember_losses: np.ndarray
) -> dict[str, float | int]:
    """The loss-threshold attack's success from the losses of both groups.

    Args:
        member_losses: Losses on rows the model was trained on.
        nonmember_losses: Losses on rows it never saw (as many, for a fair AUC).

    Returns:
        ``{"auc", "advantage", "tpr_at_1pct_fpr", "member_loss", "nonmember_loss",
        "members", "nonmembers"}``: the attack's ROC AUC, its best TPR - FPR (the
        membership advantage), its true-positive rate at a 1% false-positive rate,
        and the mean losses.

    Raises:
        ValueError: If either group is empty.
    """
    if not len(member_losses) or not len(nonmember_losses):
        raise ValueError("need losses of members and of non-members")
    truth = np.r_[np.ones(len(member_losses)), np.zeros(len(nonmember_losses))]
    score = -np.r_[member_losses, nonmember_losses]  # low loss = "member"
    fpr, tpr, _ = roc_curve(truth, score)
    return {
        "auc": float(roc_auc_score(truth, score)),
        "advantage": float(np.max(tpr - fpr)),
        "tpr_at_1pct_fpr": float(np.max(tpr[fpr <= 0.01], initial=0.0)),
        "member_loss": float(np.mean(member_losses)),
        "nonmember_loss": float(np.mean(nonmember_losses)),
        "members": len(member_losses),
        "nonmembers": len(nonmember_losses),
    }


def audit_model(
    predictor: Predictor,
    members: tuple[Sequence[str], Sequence[int]],
    nonmembers: tuple[Sequence[str], Sequence[int]],
) -> dict[str, float | int]:
    """:func:`membership_audit` of one model on ``(texts, label ids)`` of each group."""
    return membership_audit(
        label_losses(predictor, *members), label_losses(predictor, *nonmembers)
    )


@dataclass(frozen=True)
class PrivacyOptions:
    """How the release audits membership (``compress_options.privacy``)."""

    rows: int = 2000  # training rows and as many test rows scored per model
    seed: int = 0  # which rows

    def __post_init__(self) -> None:
        if self.rows < 1:
            raise ValueError(
                f"compress_options.privacy.rows must be >= 1, got {self.rows}"
            )


def _sample(
    texts: Sequence[str], labels: Sequence[int], rows: int, rng: np.random.Generator
) -> tuple[list[str], list[int]]:
    chosen = rng.permutation(len(texts))[:rows]
    return [texts[i] for i in chosen], [int(labels[i]) for i in chosen]


def audit_release(
    models: dict[str, Predictor],
    train: tuple[Sequence[str], Sequence[int]],
    test: tuple[Sequence[str], Sequence[int]],
    options: PrivacyOptions,
) -> dict[str, Any]:
    """Audit each model on the same training (member) and test (non-member) rows.

    Args:
        models: Name to predictor (e.g. ``student``, ``teacher``).
        train: ``(texts, label ids)`` of the rows every model was trained on.
        test: ``(texts, label ids)`` of rows none saw.
        options: How many rows and which.

    Returns:
        ``{"attack", "rows", <name>: membership_audit(...) for each model}``.
    """
    rows = min(options.rows, len(train[0]), len(test[0]))
    rng = np.random.default_rng(options.seed)
    members, nonmembers = _sample(*train, rows, rng), _sample(*test, rows, rng)
    report: dict[str, Any] = {
        "attack": "loss threshold (Yeom et al., 2018): low loss on the true label "
        "is read as 'trained on this row'",
        "rows": rows,
    }
    for name, predictor in models.items():
        report[name] = audit_model(predictor, members, nonmembers)
    return report


def privacy_markdown(report: dict[str, Any], validation_counts: dict[str, int]) -> str:
    """The model card's section on what the training data may leak.

    Args:
        report: :func:`audit_release`'s report.
        validation_counts: The validation stage's counts (``pii.<type>``).

    Returns:
        Markdown: the personal data replaced before training and the membership
        audit of each model.
    """
    replaced = {
        k.removeprefix("pii."): v
        for k, v in validation_counts.items()
        if k.startswith("pii.")
    }
    lines = ["## Privacy", ""]
    if replaced:
        kinds = ", ".join(f"{count} {kind}" for kind, count in replaced.items())
        lines.append(
            f"Personal data replaced by placeholders before training: {kinds}."
        )
    else:
        lines.append("Personal data was not scrubbed (`validate.scrub_pii: false`).")
    lines += [
        "",
        f"Membership inference, {report['attack']}, on {report['rows']} training and "
        f"as many test rows (AUC 0.5: the attack does no better than chance):",
        "",
        "| model | attack AUC | advantage | TPR at 1% FPR | loss, train / test |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in (k for k, v in report.items() if isinstance(v, dict)):
        a = report[name]
        lines.append(
            f"| {name} | {a['auc']:.3f} | {a['advantage']:.3f} | "
            f"{a['tpr_at_1pct_fpr']:.3f} | {a['member_loss']:.3f} / {a['nonmember_loss']:.3f} |"
        )
    lines += [
        "",
        "A low AUC is evidence against this attack, not a guarantee against others.",
        "",
    ]
    return "\n".join(lines)
