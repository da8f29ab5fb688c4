"""Monitor nodes: the retraining decision of the scheduled DAG."""

from __future__ import annotations

import logging
from typing import Any

from distillery.ml.data.drift import ACTIONS, RetrainThresholds, decide_retraining
from distillery.ml.serve.registry import retrain_reference
from distillery.ml.train.options import options_from_params
from distillery.tracking import as_metrics

logger = logging.getLogger(__name__)


def decide_retraining_action(
    validation_summary: dict[str, Any],
    monitor_options: dict[str, Any],
    registry: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, float]]:
    """``skip``, ``redistill`` or ``full``: corpus hash and drift vs the latest version.

    The latest version is the one behind the ``challenger`` alias (every passing run
    moves it), see :mod:`distillery.ml.data.drift`.

    Returns:
        The decision (``retrain_decision.json``) and its MLflow metrics (the drift,
        and ``action`` as 0 skip, 1 redistill, 2 full).
    """
    thresholds = options_from_params(
        RetrainThresholds, monitor_options, "monitor_options"
    )
    reference = retrain_reference(registry["name"], registry["alias"])
    decision = decide_retraining(
        validation_summary["sha256"],
        validation_summary["profile"],
        reference,
        thresholds,
    )
    logger.info("Retraining decision: %s (%s)", decision["action"], decision["reason"])
    drift = decision["drift"] or {}
    return decision, as_metrics({**drift, "action": ACTIONS.index(decision["action"])})
