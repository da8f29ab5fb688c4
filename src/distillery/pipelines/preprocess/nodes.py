"""Preprocess nodes. Inputs and outputs are lazy Dask frames; the catalog's Dask
datasets write them, so the work runs on whichever scheduler the Dask hook set up."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import dask
import dask.dataframe as dd
import pandas as pd

from distillery.ml.data.text import (
    SPLITS,
    empty_tokenized_frame,
    encode_partition,
    load_encoder,
    mark_duplicates_partition,
    normalize_partition,
    split_fractions,
)
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

    Copies of a text are brought together by a shuffle on its hash; the first (lowest
    ``source_row``) is kept and the others are flagged, not deleted, so they can be
    counted and inspected. There are ``npartitions`` partitions, or one per input
    partition (Parquet row group) when the input has more: a partition's rows, and so
    a task's memory, stay bounded however large the corpus grows.
    """
    options = PreprocessOptions.from_params(preprocess)
    npartitions = max(options.npartitions, validated_texts.npartitions)
    frame = validated_texts[["text", "label", "source_row"]].repartition(
        npartitions=npartitions
    )
    meta = normalize_partition(frame._meta, options.seed, options.fractions, "", "")
    normalized = frame.map_partitions(
        normalize_partition,
        options.seed,
        options.fractions,
        options.user_token,
        options.url_token,
        meta=meta,
    )
    shuffled = normalized.shuffle(on="text_hash", npartitions=npartitions)
    marked_meta = mark_duplicates_partition(meta)
    return shuffled.map_partitions(mark_duplicates_partition, meta=marked_meta)


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
    label_to_id = {label: i for i, label in enumerate(label_vocab["labels"])}
    # The tokenizer is loaded here and travels in the graph as one shared piece of
    # data: workers then import neither transformers nor torch (~2 s and ~220 MB
    # each) and need no copy of the model files.
    encoder = dask.delayed(load_encoder(options.tokenizer, options.max_length))
    kept = normalized_texts[~normalized_texts["is_duplicate"]]
    outputs = []
    for split in SPLITS:
        rows = kept[kept["split"] == split]
        outputs.append(
            rows.map_partitions(
                encode_partition,
                encoder,
                label_to_id,
                meta=empty_tokenized_frame(),
            )
        )
    return tuple(outputs)  # type: ignore[return-value]


def summarize_preprocess(
    normalized_texts: dd.DataFrame,
) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
    """Count duplicates, split sizes and class balance per split (one Dask compute).

    Returns:
        The duplicate rows (with ``duplicate_of``), a JSON summary and MLflow metrics.
    """
    duplicates, table = dask.compute(
        normalized_texts[normalized_texts["is_duplicate"]][
            ["source_row", "duplicate_of", "text", "label", "split"]
        ],
        normalized_texts[~normalized_texts["is_duplicate"]]
        .groupby(["split", "label"])
        .size(),
    )
    duplicates = duplicates.sort_values("source_row").reset_index(drop=True)
    table = table.sort_index()
    sizes = {
        split: int(table.get(split, pd.Series(dtype=int)).sum()) for split in SPLITS
    }
    balance = {
        split: {
            str(k): int(v) for k, v in table.get(split, pd.Series(dtype=int)).items()
        }
        for split in SPLITS
    }
    logger.info("Dropped %d exact duplicates; split sizes %s", len(duplicates), sizes)
    summary = {
        "duplicates": len(duplicates),
        "split_sizes": sizes,
        "class_balance": balance,
    }
    metrics = {"duplicates": len(duplicates)}
    metrics |= {metric_key("split", s, "rows"): n for s, n in sizes.items()}
    metrics |= {
        metric_key("split", s, "class", label): n
        for s, counts in balance.items()
        for label, n in counts.items()
    }
    return duplicates, summary, as_metrics(metrics)
