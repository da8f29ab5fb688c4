"""Validate a standard corpus frame: repair, row rules, quarantine, class contracts.

The sequence every run follows, in order: the input must not be empty; texts with
undecodable bytes are repaired where enough remains to read; the row rules run on the
repaired texts and failing rows are quarantined with a reason; personal data in the
clean texts (e-mails, phone and card numbers, IP addresses) is replaced by typed
placeholders and counted; the class contracts run on the clean rows. The result carries
everything the report and the summary need.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from distillery.ml.data.drift import data_profile
from distillery.ml.data.pii import scrub_texts
from distillery.ml.train.options import options_from_params
from distillery.validation.quarantine import split_quarantine
from distillery.validation.repair import RepairOptions, repair_texts
from distillery.validation.report import render_report
from distillery.validation.suites import (
    ROW_RULE_NAMES,
    RuleOutcome,
    check_classes,
    check_non_empty,
    find_row_failures,
)

logger = logging.getLogger(__name__)

REPAIRED_COLUMNS = ["source_row", "original", "repaired", "damaged_share"]


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
    scrub_pii: bool = True

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


@dataclass(frozen=True)
class ValidationResult:
    """What one validation run produced.

    Attributes:
        clean: Rows that passed every row rule.
        quarantined: Failing rows, with a ``reason`` column.
        repaired: One row per repaired text: ``source_row``, ``original``,
            ``repaired``, ``damaged_share``.
        counts: Rows in, clean, quarantined and repaired, then per quarantine reason
            (``quarantined.<reason>``), per clean class (``class.<label>``) and, when
            the scrub is on, personal data replaced per type (``pii.<type>``).
        outcomes: Every contract and row rule that ran, in the order they ran.
        quarantine_examples: Up to ``report_examples`` texts per quarantine reason.
        repair_examples: Up to ``report_examples`` ``(original, repaired)`` texts.
    """

    clean: pd.DataFrame
    quarantined: pd.DataFrame
    repaired: pd.DataFrame
    counts: dict[str, int]
    outcomes: list[RuleOutcome]
    quarantine_examples: dict[str, list[str]]
    repair_examples: list[tuple[str, str]]


def allowed_labels(
    options: ValidateOptions, label_map: Mapping[Any, Any] | None = None
) -> tuple[str, ...] | None:
    """The label set rows must belong to: ``options.labels``, else ``label_map``'s values.

    Args:
        options: The validation options.
        label_map: The ingest label map (raw label -> label), if one is configured.

    Returns:
        The sorted labels, or ``None`` when neither names any (every label is allowed).
    """
    if options.labels is not None:
        return options.labels
    if label_map:
        return tuple(sorted({str(v) for v in label_map.values()}))
    return None


def validate_frame(
    frame: pd.DataFrame,
    file: str,
    options: ValidateOptions,
    label_map: Mapping[Any, Any] | None = None,
) -> ValidationResult:
    """Repair, check and split a ``text, label, source_row`` frame; reconcile the rows.

    Args:
        frame: The standard frame from ingest.
        file: The source it came from (named in errors, logs and the report).
        options: The thresholds and rules to apply.
        label_map: The ingest label map; its values are the allowed labels when
            ``options.labels`` is not set.

    Returns:
        The clean, quarantined and repaired rows with their counts, rule outcomes and
        examples; clean + quarantined rows always add up to the input rows.

    Raises:
        DataContractError: empty input, fewer than ``min_classes`` classes, or a class
            with fewer than ``min_rows_per_class`` valid rows.
    """
    outcomes = [check_non_empty(frame, file)]
    repairs = _empty_repairs()
    if options.repair is not None:
        text, repairs = repair_texts(frame["text"], options.repair)
        frame = frame.assign(text=text)
    rule_options = {
        "max_text_chars": options.max_text_chars,
        "labels": allowed_labels(options, label_map),
        "skip_row_rules": options.skip_row_rules,
    }
    reasons, row_outcomes = find_row_failures(frame, rule_options)
    outcomes += row_outcomes
    clean, quarantined = split_quarantine(frame, reasons)
    replaced: dict[str, int] = {}
    if options.scrub_pii:
        text, replaced = scrub_texts(clean["text"])
        clean = clean.assign(
            text=pd.Series(text, index=clean.index, dtype=clean["text"].dtype)
        )
    outcomes += check_classes(
        clean, options.min_classes, options.min_rows_per_class, file
    )
    repaired = repairs.assign(
        source_row=frame.loc[repairs.index, "source_row"].to_numpy()
    )[REPAIRED_COLUMNS].reset_index(drop=True)
    return ValidationResult(
        clean=clean,
        quarantined=quarantined,
        repaired=repaired,
        counts=_counts(len(frame), clean, quarantined, len(repairs), file)
        | {f"pii.{kind}": count for kind, count in replaced.items()},
        outcomes=outcomes,
        quarantine_examples=_quarantine_examples(quarantined, options.report_examples),
        repair_examples=[
            (str(r.original), str(r.repaired))
            for r in repairs.head(options.report_examples).itertuples()
        ],
    )


def _counts(
    rows_in: int,
    clean: pd.DataFrame,
    quarantined: pd.DataFrame,
    rows_repaired: int,
    file: str,
) -> dict[str, int]:
    by_reason = quarantined["reason"].value_counts().sort_index()
    balance = clean["label"].value_counts().sort_index()
    for reason, count in by_reason.items():
        logger.warning("Quarantined %d rows of %s: %s", count, file, reason)
    return {
        "rows_in": rows_in,
        "rows_clean": len(clean),
        "rows_quarantined": len(quarantined),
        "rows_repaired": rows_repaired,
        **{f"quarantined.{r}": int(c) for r, c in by_reason.items()},
        **{f"class.{label}": int(c) for label, c in balance.items()},
    }


def _quarantine_examples(
    quarantined: pd.DataFrame, per_reason: int
) -> dict[str, list[str]]:
    return {
        str(reason): [str(t) for t in group["text"].head(per_reason).fillna("<NaN>")]
        for reason, group in quarantined.groupby("reason", sort=True)
    }


def validation_report(result: ValidationResult, file: str) -> str:
    """The run's self-contained HTML report (see :func:`render_report`).

    Args:
        result: The run, from :func:`validate_frame`.
        file: The source the rows came from.

    Returns:
        The page as a string.
    """
    return render_report(
        file,
        result.counts,
        result.outcomes,
        result.quarantine_examples,
        result.repair_examples,
    )


def validation_summary(
    result: ValidationResult, file: str, sha256: str | None
) -> dict[str, Any]:
    """The run as JSON: source, counts, a profile of the clean data and every rule.

    Args:
        result: The run, from :func:`validate_frame`.
        file: The source the rows came from.
        sha256: The source's checksum, if known.

    Returns:
        ``source``, ``sha256``, ``counts``, ``profile`` and ``rules``.
    """
    clean = result.clean
    return {
        "source": file,
        "sha256": sha256,
        "counts": result.counts,
        # What the clean data looks like: scheduled retraining measures drift on it.
        "profile": data_profile(clean["text"].tolist(), clean["label"].tolist()),
        "rules": [o.__dict__ for o in result.outcomes],
    }


def _empty_repairs() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "original": pd.Series(dtype="string"),
            "repaired": pd.Series(dtype="string"),
            "damaged_share": pd.Series(dtype="float64"),
        }
    )
