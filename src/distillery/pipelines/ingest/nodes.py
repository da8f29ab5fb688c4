"""Ingest nodes: read any supported corpus and map it to ``text, label, source_row``."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from distillery.ml.data.corpus import read_source
from distillery.ml.data.standardize import label_text, sample_frame, standardize_frame
from distillery.ml.train.options import options_from_params
from distillery.tracking import as_metrics
from distillery.validation.suites import check_columns

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class IngestOptions:
    """``params:ingest``: where the corpus is and which columns hold text and label."""

    source: str = "builtin"
    text_column: str = "text"
    label_column: str = "sentiment"
    label_map: dict[str, str] | None = None
    read_options: dict[str, Any] = field(default_factory=dict)
    sample_rows: int | None = None
    seed: int = 42

    def __post_init__(self) -> None:
        if self.sample_rows is not None and self.sample_rows < 1:
            raise ValueError(
                f"ingest.sample_rows must be >= 1 or null, got {self.sample_rows}"
            )
        for name in ("source", "text_column", "label_column"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise ValueError(
                    f"ingest.{name} must be a non-empty string, got {value!r}"
                )
        if self.text_column == self.label_column:
            raise ValueError("ingest.text_column and ingest.label_column must differ")
        if self.label_map is not None:
            if not isinstance(self.label_map, dict) or not self.label_map:
                raise ValueError("ingest.label_map must be a non-empty mapping or null")
            # YAML and --params turn keys like 1 into ints; labels are compared as text.
            object.__setattr__(
                self,
                "label_map",
                {label_text(k): str(v) for k, v in self.label_map.items()},
            )

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> IngestOptions:
        """Build from the ``ingest`` parameters, rejecting unknown keys."""
        return options_from_params(cls, params, "ingest")


def read_corpus(ingest: dict[str, Any]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read the configured source; return the raw copy and its manifest (path, sha256, rows).

    Raises:
        distillery.ml.corpus.SourceError: the file is missing, empty, unreadable or of an
            unsupported type.
    """
    options = IngestOptions.from_params(ingest)
    raw, manifest = read_source(options.source, options.read_options)
    # Parquet keeps one type per column; mixed objects are stored as text in the copy.
    raw_copy = raw.assign(
        **{c: raw[c].astype("string") for c in raw.columns if raw[c].dtype == object}
    )
    return raw_copy, manifest


def standardize_corpus(
    raw_corpus: pd.DataFrame, source_manifest: dict[str, Any], ingest: dict[str, Any]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Map the raw frame to ``text, label, source_row`` and repair mojibake with ftfy.

    ``source_row`` is the 0-based data row in the source file, so every later output
    (clean, quarantined, duplicate) points back to its line.

    Returns:
        The standard frame and the ingest metrics (rows, repaired texts).

    Raises:
        DataContractError: a configured column is missing (rule ``column_exists``).
    """
    options = IngestOptions.from_params(ingest)
    file = source_manifest["path"]
    check_columns(
        raw_corpus, {"text": options.text_column, "label": options.label_column}, file
    )
    frame, repaired = standardize_frame(
        raw_corpus, options.text_column, options.label_column, options.label_map
    )
    frame = sample_frame(frame, options.sample_rows, options.seed)
    logger.info(
        "Ingested %d rows from %s; ftfy repaired %d texts", len(frame), file, repaired
    )
    metrics = {
        "rows_read": len(raw_corpus),
        "rows_in": len(frame),
        "texts_repaired": repaired,
    }
    return frame, as_metrics(metrics)
