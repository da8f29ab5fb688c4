"""Validate nodes: Great Expectations suites, quarantine and reconciliation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from distillery.ml.data.drift import data_profile
from distillery.ml.train.options import options_from_params
from distillery.tracking import as_metrics, metric_key
from distillery.validation.quarantine import split_quarantine
from distillery.validation.repair import RepairOptions, repair_texts
from distillery.validation.report import render_report
from distillery.validation.suites import (
    ROW_RULE_NAMES,
    check_classes,
    check_non_empty,
    find_row_failures,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidateOptions:
    """``params:validate``: the contract and row-rule thresholds."""

    labels: tuple[str, ...] | None = None
    max_text_chars: int = 1000
    min_classes: int = 2
    min_rows_per_class: int = 10
    skip_row_rules: tuple[str, ...] = ()
    report_examples: int = 3
    repair: RepairOptions | None = RepairOptions()

    def __post_init__(self) -> None:
        if isinstance(self.repair, dict):
            object.__setattr__(self, "repair", RepairOptions(**self.repair))
        if self.labels is not None:
            object.__setattr__(self, "labels", tuple(str(x) for x in self.labels))
        object.__setattr__(self, "skip_row_rules", tuple(self.skip_row_rules or ()))
        if self.max_text_chars < 1:
            raise ValueError(
                f"validate.max_text_chars must be >= 1, got {self.max_text_chars}"
            )
        if self.min_classes < 2:
            raise ValueError(
                f"validate.min_classes must be >= 2, got {self.min_classes}"
            )
        if self.min_rows_per_class < 1:
            raise ValueError(
                f"validate.min_rows_per_class must be >= 1, got {self.min_rows_per_class}"
            )
        unknown = set(self.skip_row_rules) - set(ROW_RULE_NAMES)
        if unknown:
            raise ValueError(
                f"validate.skip_row_rules has unknown rule(s) {sorted(unknown)}; "
                f"row rules are {list(ROW_RULE_NAMES)}"
            )

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ValidateOptions:
        """Build from the ``validate`` parameters, rejecting unknown keys."""
        return options_from_params(cls, params, "validate")


def allowed_labels(
    options: ValidateOptions, ingest: dict[str, Any]
) -> tuple[str, ...] | None:
    """The label set rows must belong to: ``validate.labels``, else the label map's values."""
    if options.labels is not None:
        return options.labels
    label_map = ingest.get("label_map")
    if label_map:
        return tuple(sorted({str(v) for v in label_map.values()}))
    return None


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
    outcomes = [check_non_empty(ingested_texts, file)]
    repairs = _empty_repairs()
    if options.repair is not None:
        text, repairs = repair_texts(ingested_texts["text"], options.repair)
        ingested_texts = ingested_texts.assign(text=text)
    rule_options = {
        "max_text_chars": options.max_text_chars,
        "labels": allowed_labels(options, ingest),
        "skip_row_rules": options.skip_row_rules,
    }
    reasons, row_outcomes = find_row_failures(ingested_texts, rule_options)
    outcomes += row_outcomes
    clean, quarantined = split_quarantine(ingested_texts, reasons)
    outcomes += check_classes(
        clean, options.min_classes, options.min_rows_per_class, file
    )

    by_reason = quarantined["reason"].value_counts().sort_index()
    balance = clean["label"].value_counts().sort_index()
    for reason, count in by_reason.items():
        logger.warning("Quarantined %d rows of %s: %s", count, file, reason)
    counts = {
        "rows_in": len(ingested_texts),
        "rows_clean": len(clean),
        "rows_quarantined": len(quarantined),
        "rows_repaired": len(repairs),
        **{f"quarantined.{r}": int(c) for r, c in by_reason.items()},
        **{f"class.{label}": int(c) for label, c in balance.items()},
    }
    examples = {
        str(reason): [
            str(t) for t in group["text"].head(options.report_examples).fillna("<NaN>")
        ]
        for reason, group in quarantined.groupby("reason", sort=True)
    }
    repair_examples = [
        (str(r.original), str(r.repaired))
        for r in repairs.head(options.report_examples).itertuples()
    ]
    report = render_report(file, counts, outcomes, examples, repair_examples)
    summary = {
        "source": file,
        "sha256": source_manifest.get("sha256"),
        "counts": counts,
        # What the clean data looks like: scheduled retraining measures drift on it.
        "profile": data_profile(clean["text"].tolist(), clean["label"].tolist()),
        "rules": [o.__dict__ for o in outcomes],
    }
    metrics = as_metrics({metric_key(k): v for k, v in counts.items()})
    repaired = repairs.assign(
        source_row=ingested_texts.loc[repairs.index, "source_row"].to_numpy()
    )[["source_row", "original", "repaired", "damaged_share"]].reset_index(drop=True)
    return clean, quarantined, repaired, report, summary, metrics


def _empty_repairs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "original": pd.Series(dtype="string"),
            "repaired": pd.Series(dtype="string"),
            "damaged_share": pd.Series(dtype="float64"),
        }
    )
