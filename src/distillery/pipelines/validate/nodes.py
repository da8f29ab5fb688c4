"""Validate nodes: Great Expectations suites, quarantine and reconciliation."""

from __future__ import annotations

from typing import Any

import pandas as pd

from distillery.tracking import as_metrics, metric_key
from distillery.validation.corpus import (
    ValidateOptions,
    validate_frame,
    validation_report,
    validation_summary,
)

__all__ = ["ValidateOptions", "validate_corpus"]


def validate_corpus(
    ingested_texts: pd.DataFrame,
    source_manifest: dict[str, Any],
    validate: dict[str, Any],
    ingest: dict[str, Any],
) -> tuple[
    pd.DataFrame, pd.DataFrame, pd.DataFrame, str, dict[str, Any], dict[str, Any]
]:
    """Check the contracts, quarantine failing rows and reconcile the counts.

    Texts with undecodable bytes are repaired first where enough remains to read
    (``validate.repair``); the rules then run on the repaired texts.

    Returns:
        ``validated_texts`` (clean rows), ``quarantined_texts`` (with ``reason``),
        ``repaired_texts`` (``source_row``, ``original``, ``repaired``,
        ``damaged_share``), the HTML report, a JSON summary and the MLflow metrics.

    Raises:
        DataContractError: empty input, fewer than ``min_classes`` classes, or a class
            with fewer than ``min_rows_per_class`` valid rows.
    """
    options = ValidateOptions.from_params(validate)
    file = source_manifest["path"]
    result = validate_frame(ingested_texts, file, options, ingest.get("label_map"))
    return (
        result.clean,
        result.quarantined,
        result.repaired,
        validation_report(result, file),
        validation_summary(result, file, source_manifest.get("sha256")),
        as_metrics({metric_key(k): v for k, v in result.counts.items()}),
    )
