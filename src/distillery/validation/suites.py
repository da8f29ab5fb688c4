"""The one registry of expectation suites: table contracts and row rules.

Contract rules stop the run (:class:`DataContractError`); row rules send the failing
rows to quarantine with the rule's name as ``reason``. Every rule but one is a Great
Expectations 1.x expectation; ``min_rows_per_class`` has no GX equivalent and is
computed with pandas beside them, reported in the same result list.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

logger = logging.getLogger(__name__)

# GX prints progress bars and usage statistics by default; neither belongs in a pipeline.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

TEXT = "text"
LABEL = "label"
ROW_ID = "source_row"
REPLACEMENT_CHAR = "\ufffd"


@dataclass(frozen=True)
class RowRuleSpec:
    """A row-level rule: rows failing it are quarantined with ``reason = name``."""

    name: str
    column: str
    description: str
    build: Callable[[dict[str, Any]], Any | None]  # options -> GX expectation or None


@dataclass(frozen=True)
class RuleOutcome:
    """What one rule found, for logs, the HTML report and MLflow."""

    name: str
    column: str
    description: str
    success: bool
    unexpected_count: int
    observed: str


def _gx():  # noqa: ANN202 - imported lazily: GX takes seconds to import
    import great_expectations as gx  # noqa: PLC0415

    return gx


def _row_rules() -> list[RowRuleSpec]:
    gx = _gx()
    ex = gx.expectations
    return [
        RowRuleSpec(
            "missing_text",
            TEXT,
            "text is not null (NaN / empty cell)",
            lambda o: ex.ExpectColumnValuesToNotBeNull(column=TEXT),
        ),
        RowRuleSpec(
            "blank_text",
            TEXT,
            "text is not empty or whitespace only",
            lambda o: ex.ExpectColumnValuesToNotMatchRegex(column=TEXT, regex=r"^\s*$"),
        ),
        RowRuleSpec(
            "undecodable_text",
            TEXT,
            "text decoded without invalid bytes (no U+FFFD left after ftfy repair)",
            lambda o: ex.ExpectColumnValuesToNotMatchRegex(
                column=TEXT, regex=REPLACEMENT_CHAR
            ),
        ),
        RowRuleSpec(
            "text_too_long",
            TEXT,
            "text length within max_text_chars",
            lambda o: ex.ExpectColumnValueLengthsToBeBetween(
                column=TEXT, min_value=1, max_value=o["max_text_chars"]
            ),
        ),
        RowRuleSpec(
            "missing_label",
            LABEL,
            "label is not null",
            lambda o: ex.ExpectColumnValuesToNotBeNull(column=LABEL),
        ),
        RowRuleSpec(
            "unknown_label",
            LABEL,
            "label is one of the allowed labels",
            lambda o: (
                ex.ExpectColumnValuesToBeInSet(
                    column=LABEL, value_set=list(o["labels"])
                )
                if o.get("labels")
                else None
            ),
        ),
    ]


ROW_RULE_NAMES: tuple[str, ...] = (
    "missing_text",
    "blank_text",
    "undecodable_text",
    "text_too_long",
    "missing_label",
    "unknown_label",
)
CONTRACT_RULE_NAMES: tuple[str, ...] = (
    "column_exists",
    "non_empty_input",
    "min_classes",
    "min_rows_per_class",
)


def _validate(frame: pd.DataFrame, expectations: list[Any], suite_name: str) -> Any:
    """Run expectations on a frame with an ephemeral GX context; return GX's result."""
    gx = _gx()
    from great_expectations.data_context.types.base import (  # noqa: PLC0415
        ProgressBarsConfig,
    )

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_pandas("distillery")
    batch_definition = source.add_dataframe_asset(
        suite_name
    ).add_batch_definition_whole_dataframe("all_rows")
    suite = gx.ExpectationSuite(name=suite_name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    batch = batch_definition.get_batch(batch_parameters={"dataframe": frame})
    return batch.validate(
        suite,
        result_format={
            "result_format": "COMPLETE",
            "unexpected_index_column_names": [ROW_ID],
        },
    )


def check_columns(
    frame: pd.DataFrame, columns: dict[str, str], file: str
) -> RuleOutcome:
    """Contract ``column_exists``: every configured column is in the source.

    Args:
        frame: the raw source frame.
        columns: role -> configured column name, e.g. ``{"text": "review"}``.
        file: the source, for the error message.

    Raises:
        DataContractError: naming the first missing column.
    """
    from distillery.validation.errors import DataContractError  # noqa: PLC0415

    gx = _gx()
    result = _validate(
        frame.head(0).assign(**{ROW_ID: pd.Series(dtype="int64")}),
        [gx.expectations.ExpectColumnToExist(column=c) for c in columns.values()],
        "columns",
    )
    for role, (column, outcome) in zip(
        columns, zip(columns.values(), result.results, strict=True), strict=True
    ):
        if not outcome.success:
            raise DataContractError(
                file,
                column,
                "column_exists",
                f"the {role} column '{column}' is not in the source; "
                f"found columns {list(map(str, frame.columns))}",
            )
    return RuleOutcome(
        "column_exists",
        ",".join(columns.values()),
        "configured columns exist",
        True,
        0,
        "all present",
    )


def check_non_empty(frame: pd.DataFrame, file: str) -> RuleOutcome:
    """Contract ``non_empty_input``: the source has at least one data row.

    Raises:
        DataContractError: if the frame has no rows.
    """
    from distillery.validation.errors import DataContractError  # noqa: PLC0415

    gx = _gx()
    result = _validate(
        frame, [gx.expectations.ExpectTableRowCountToBeBetween(min_value=1)], "table"
    )
    observed = result.results[0].result.get("observed_value", len(frame))
    if not result.success:
        raise DataContractError(
            file, "<table>", "non_empty_input", f"the source has {observed} data rows"
        )
    return RuleOutcome(
        "non_empty_input",
        "<table>",
        "at least one data row",
        True,
        0,
        f"{observed} rows",
    )


def find_row_failures(
    frame: pd.DataFrame, options: dict[str, Any]
) -> tuple[pd.Series, list[RuleOutcome]]:
    """Run the row rules; return each failing row's first reason and every rule's outcome.

    Args:
        frame: standard frame with ``text``, ``label`` and ``source_row``.
        options: ``max_text_chars`` (int), ``labels`` (allowed labels or None),
            ``skip_row_rules`` (rule names to leave out).

    Returns:
        A Series indexed like ``frame`` holding the reason (registry order decides when
        a row breaks several rules) or ``None`` for clean rows, and the outcomes.
    """
    skip = set(options.get("skip_row_rules") or ())
    active: list[tuple[RowRuleSpec, Any]] = []
    for spec in _row_rules():
        expectation = None if spec.name in skip else spec.build(options)
        if expectation is not None:
            active.append((spec, expectation))
    reasons = pd.Series([None] * len(frame), index=frame.index, dtype=object)
    if not active or frame.empty:
        return reasons, [
            RuleOutcome(s.name, s.column, s.description, True, 0, "no rows")
            for s, _ in active
        ]
    result = _validate(frame, [e for _, e in active], "rows")
    position = pd.Series(frame.index, index=frame[ROW_ID].to_numpy())
    outcomes = []
    for (spec, _), outcome in zip(active, result.results, strict=True):
        if outcome.exception_info and outcome.exception_info.get("raised_exception"):
            raise RuntimeError(
                f"Great Expectations could not evaluate rule '{spec.name}': "
                f"{outcome.exception_info.get('exception_message')}"
            )
        failed_rows = [
            int(item[ROW_ID])
            for item in outcome.result.get("unexpected_index_list") or []
        ]
        failed_index = position.loc[failed_rows].to_numpy() if failed_rows else []
        unset = reasons.loc[failed_index].isna()
        reasons.loc[unset.index[unset.to_numpy()]] = spec.name
        outcomes.append(
            RuleOutcome(
                spec.name,
                spec.column,
                spec.description,
                bool(outcome.success),
                len(failed_rows),
                f"{len(failed_rows)} rows",
            )
        )
    return reasons, outcomes


def check_classes(
    frame: pd.DataFrame, min_classes: int, min_rows_per_class: int, file: str
) -> list[RuleOutcome]:
    """Contracts ``min_classes`` (GX) and ``min_rows_per_class`` on the clean rows.

    Raises:
        DataContractError: too few classes, or a class below ``min_rows_per_class``.
    """
    from distillery.validation.errors import DataContractError  # noqa: PLC0415

    gx = _gx()
    result = _validate(
        frame,
        [
            gx.expectations.ExpectColumnUniqueValueCountToBeBetween(
                column=LABEL, min_value=min_classes
            )
        ],
        "classes",
    )
    counts = frame[LABEL].value_counts().sort_index()
    if not result.success:
        raise DataContractError(
            file,
            LABEL,
            "min_classes",
            f"{counts.size} class(es) {counts.to_dict()} among the valid rows; "
            f"at least {min_classes} are needed",
        )
    small = counts[counts < min_rows_per_class]
    if not small.empty:
        raise DataContractError(
            file,
            LABEL,
            "min_rows_per_class",
            f"class(es) {small.to_dict()} have fewer than {min_rows_per_class} valid rows",
        )
    return [
        RuleOutcome(
            "min_classes",
            LABEL,
            f"at least {min_classes} classes",
            True,
            0,
            f"{counts.size} classes",
        ),
        RuleOutcome(
            "min_rows_per_class",
            LABEL,
            f"every class has at least {min_rows_per_class} rows",
            True,
            0,
            ", ".join(f"{k}: {v}" for k, v in counts.items()),
        ),
    ]
