"""Preprocess nodes. Inputs and outputs are lazy Dask frames; the catalog's Dask
datasets write them, so the work runs on whichever scheduler the Dask hook set up."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import dask.dataframe as dd
import pandas as pd

from distillery.ml.data.splits import encode_splits, normalize_frame, split_summary
from distillery.ml.data.text import SPLITS, split_fractions
from distillery.ml.models.modeling import BUILTIN_TEACHER
from distillery.ml.train.options import options_from_params
from distillery.tracking import as_metrics, metric_key

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessOptions:
    """``params:preprocess``."""

    seed: int = 42
    split: dict[str, float] = field(
        default_factory=lambda: {"train": 0.8, "val": 0.1, "test": 0.1}
    )
    tokenizer: str = BUILTIN_TEACHER
    max_length: int = 128
    user_token: str = "@user"
    url_token: str = "http"
    npartitions: int = 4

    def __post_init__(self) -> None:
        if set(self.split) != set(SPLITS):
            raise ValueError(
                f"preprocess.split needs exactly {SPLITS}, got {sorted(self.split)}"
            )
        split_fractions(self.split["train"], self.split["val"], self.split["test"])
        if not 8 <= self.max_length <= 4096:
            raise ValueError(
                f"preprocess.max_length must be in [8, 4096], got {self.max_length}"
            )
        if self.npartitions < 1:
            raise ValueError(
                f"preprocess.npartitions must be >= 1, got {self.npartitions}"
            )

    @property
    def fractions(self) -> tuple[float, float, float]:
        """(train, val, test) fractions."""
        return split_fractions(
            self.split["train"], self.split["val"], self.split["test"]
        )

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> PreprocessOptions:
        """Build from the ``preprocess`` parameters, rejecting unknown keys."""
        return options_from_params(cls, params, "preprocess")


def normalize_texts(
    validated_texts: dd.DataFrame, preprocess: dict[str, Any]
) -> dd.DataFrame:
    """Normalise texts, assign splits by hash and flag exact duplicates.

    Duplicates are flagged, not deleted; see
    :func:`distillery.ml.data.splits.normalize_frame` for the shuffle and partitioning.
    """
    options = PreprocessOptions.from_params(preprocess)
    return normalize_frame(
        validated_texts,
        options.seed,
        options.fractions,
        options.user_token,
        options.url_token,
        options.npartitions,
    )


def build_label_vocab(normalized_texts: dd.DataFrame) -> dict[str, Any]:
    """Sorted label list; a label's id is its position."""
    # A tree reduction: a handful of labels need no shuffle.
    unique = normalized_texts["label"].unique(split_out=1)
    labels = sorted(str(x) for x in unique.compute())
    logger.info("Label vocabulary: %s", labels)
    return {"labels": labels}


def tokenize_splits(
    normalized_texts: dd.DataFrame,
    label_vocab: dict[str, Any],
    preprocess: dict[str, Any],
) -> tuple[dd.DataFrame, dd.DataFrame, dd.DataFrame]:
    """Tokenise the kept rows of each split with the teacher's fast tokenizer.

    Returns:
        Lazy frames for train, val and test with ``input_ids``, ``attention_mask``,
        ``label`` (id), ``text`` and ``source_row``, each sorted by ``source_row``
        within its partitions so reruns write identical files.
    """
    options = PreprocessOptions.from_params(preprocess)
    return encode_splits(
        normalized_texts, label_vocab["labels"], options.tokenizer, options.max_length
    )


def summarize_preprocess(
    normalized_texts: dd.DataFrame,
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Count duplicates, split sizes and class balance per split (one Dask compute).

    Returns:
        The duplicate rows (with ``duplicate_of``), a JSON summary and MLflow metrics.
    """
    duplicates, summary = split_summary(normalized_texts)
    return duplicates, summary, as_metrics(_summary_metrics(summary))


def _summary_metrics(summary: dict[str, Any]) -> dict[str, int]:
    metrics = {"duplicates": summary["duplicates"]}
    metrics |= {
        metric_key("split", s, "rows"): n for s, n in summary["split_sizes"].items()
    }
    metrics |= {
        metric_key("split", s, "class", label): n
        for s, counts in summary["class_balance"].items()
        for label, n in counts.items()
    }
    return metrics
