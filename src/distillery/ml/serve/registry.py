"""Registry side of scheduled retraining: what the last model saw, champion vs challenger.

Every registered student carries the hash of the corpus it was distilled on and the
:func:`~distillery.ml.drift.data_profile` of the data its *teacher* was fine-tuned on
(tags ``corpus_sha256``, ``data_profile`` and ``teacher_data_profile``). The next
scheduled run compares its corpus with those of the latest version (``challenger``):
an unchanged hash means nothing new to learn, and the drift from the teacher's data
says whether that teacher can still be reused.

:func:`promote_if_better` scores the champion and the challenger with the same code
path (their registered pyfuncs, raw text in) on the same rows, and moves the
``champion`` alias only when the challenger's macro-F1 is higher by more than a margin
beyond the split's sampling noise: the lower bound of a paired-bootstrap interval of
the difference must clear the margin, so a challenger within the noise stays out.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from distillery.ml.metrics import classification_metrics, paired_bootstrap

logger = logging.getLogger(__name__)

SHA_TAG = "corpus_sha256"
PROFILE_TAG = "data_profile"
TEACHER_PROFILE_TAG = "teacher_data_profile"


def data_tags(
    sha256: str, profile: dict[str, Any], teacher_profile: dict[str, Any] | None
) -> dict[str, str]:
    """The registry tags that record which data a version and its teacher saw."""
    tags = {SHA_TAG: sha256, PROFILE_TAG: json.dumps(profile, sort_keys=True)}
    if teacher_profile is not None:
        tags[TEACHER_PROFILE_TAG] = json.dumps(teacher_profile, sort_keys=True)
    return tags


def version_by_alias(name: str, alias: str) -> Any | None:
    """The model version behind ``name@alias``, or None if the model or alias is absent."""
    try:
        return MlflowClient().get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        raise


def retrain_reference(name: str, alias: str) -> dict[str, Any] | None:
    """``{"sha256", "teacher_profile", "version"}`` of ``name@alias``.

    Returns:
        None when there is no such version or it lacks the data tags (registered
        before they were recorded): the caller then has nothing to compare with.
    """
    version = version_by_alias(name, alias)
    if version is None:
        return None
    tags = version.tags or {}
    if SHA_TAG not in tags or TEACHER_PROFILE_TAG not in tags:
        logger.warning(
            "%s@%s (version %s) has no data tags", name, alias, version.version
        )
        return None
    return {
        "sha256": tags[SHA_TAG],
        "teacher_profile": json.loads(tags[TEACHER_PROFILE_TAG]),
        "version": int(version.version),
    }


def _predicted_ids(
    model_uri: str, texts: Sequence[str], vocab: list[str]
) -> np.ndarray:
    """Label ids a registered pyfunc predicts for raw texts; -1 for a name outside
    ``vocab`` (wrong for accuracy, a false negative of the true class for F1, never
    silently class 0)."""
    model = mlflow.pyfunc.load_model(model_uri)
    predicted = model.predict(pd.DataFrame({"text": list(texts)}))["label"]
    index = {label: i for i, label in enumerate(vocab)}
    return np.array([index.get(str(p), -1) for p in predicted], dtype=np.int64)


def _scores(
    labels: Sequence[int], ids: np.ndarray, vocab: list[str]
) -> dict[str, float]:
    metrics = classification_metrics(np.asarray(labels, dtype=np.int64), ids, vocab)
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def score_registered(
    model_uri: str, texts: Sequence[str], labels: Sequence[int], vocab: list[str]
) -> dict[str, float]:
    """Accuracy and macro-F1 of a registered pyfunc on raw texts.

    Args:
        model_uri: ``models:/<name>/<version>`` or ``models:/<name>@<alias>``.
        texts: Raw texts.
        labels: Gold label ids (indices into ``vocab``).
        vocab: Label names; a predicted name outside it counts as wrong.
    """
    return _scores(labels, _predicted_ids(model_uri, texts, vocab), vocab)


def _decide(  # noqa: PLR0913 - the two models' answers, then the rule
    labels: Sequence[int],
    champion_ids: np.ndarray,
    challenger_ids: np.ndarray,
    num_labels: int,
    min_improvement: float,
    bootstrap: dict[str, Any] | None,
) -> tuple[bool, str, dict[str, float] | None]:
    """Whether the challenger's macro-F1 gain clears ``min_improvement``; why; the
    interval.

    With ``bootstrap`` (``confidence``, ``resamples``, ``seed``) the lower bound of the
    paired interval must clear it, else the gain itself.
    """
    interval = paired_bootstrap(
        # Without a bootstrap only the point estimates count: one draw gives them.
        labels,
        champion_ids,
        challenger_ids,
        num_labels,
        **(bootstrap or {"resamples": 1}),
    )
    gain = interval["difference"]
    if bootstrap is None:
        why = f"gain {gain:+.4f}, needed > {min_improvement}"
        return gain > min_improvement, why, None
    why = (
        f"gain {gain:+.4f}, {interval['confidence']:.0%} interval "
        f"{interval['low']:+.4f} to {interval['high']:+.4f}, its lower bound "
        f"needed > {min_improvement}"
    )
    return interval["low"] > min_improvement, why, interval


def promote_if_better(  # noqa: PLR0913 - the registry entry, the rows, the rule
    name: str,
    challenger_version: int,
    alias: str,
    texts: Sequence[str],
    labels: Sequence[int],
    vocab: list[str],
    min_improvement: float = 0.0,
    bootstrap: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Move ``name@alias`` to the challenger if it beats the champion on these rows.

    With no champion the challenger is promoted. A challenger that *is* the champion
    already (a rerun) is kept as it is.

    Args:
        name: Registered model name.
        challenger_version: The version that may take the alias.
        alias: The alias to move (``champion``).
        texts: Raw texts both models are scored on.
        labels: Their gold label ids (indices into ``vocab``).
        vocab: Label names.
        min_improvement: Macro-F1 gain to exceed.
        bootstrap: ``{"confidence", "resamples", "seed"}`` of the paired bootstrap
            whose lower bound must exceed ``min_improvement``; None compares the point
            estimates alone.

    Returns:
        ``{"promoted", "reason", "alias", "champion": {"version", "accuracy",
        "macro_f1"} | None, "challenger": {...}, "min_improvement", "interval",
        "rows"}``; ``interval`` is the bootstrap's result (None without one).
    """
    challenger_ids = _predicted_ids(
        f"models:/{name}/{challenger_version}", texts, vocab
    )
    challenger = {
        "version": int(challenger_version),
        **_scores(labels, challenger_ids, vocab),
    }
    current = version_by_alias(name, alias)
    champion, interval = None, None
    if current is None:
        promoted, reason = True, f"no {alias} yet"
    elif int(current.version) == challenger["version"]:
        champion = dict(challenger)
        promoted, reason = False, f"the challenger is already {alias}"
    else:
        champion_ids = _predicted_ids(f"models:/{name}/{current.version}", texts, vocab)
        champion = {
            "version": int(current.version),
            **_scores(labels, champion_ids, vocab),
        }
        promoted, why, interval = _decide(
            labels, champion_ids, challenger_ids, len(vocab), min_improvement, bootstrap
        )
        reason = (
            f"challenger macro-F1 {challenger['macro_f1']:.4f} vs {alias} "
            f"{champion['macro_f1']:.4f} ({why})"
        )
    if promoted:
        MlflowClient().set_registered_model_alias(
            name, alias, str(challenger["version"])
        )
    # Not promoted means there is a champion, and it stays.
    now = challenger if promoted else champion
    logger.info("%s@%s -> version %s (%s)", name, alias, now["version"], reason)
    return {
        "promoted": promoted,
        "reason": reason,
        "name": name,
        "alias": alias,
        "champion": champion,
        "challenger": challenger,
        "min_improvement": min_improvement,
        "interval": interval,
        "rows": len(texts),
    }
