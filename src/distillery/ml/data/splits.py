"""The preprocessing steps over lazy Dask frames: normalise, flag duplicates, tokenise
each split and count the splits.

The per-partition work is :mod:`distillery.ml.data.text`'s; this module only arranges
it into one graph, so it runs on whichever scheduler the caller set up.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
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
)

logger = logging.getLogger(__name__)

DUPLICATE_COLUMNS = ["source_row", "duplicate_of", "text", "label", "split"]


def normalize_frame(
    frame: dd.DataFrame,
    seed: int,
    fractions: tuple[float, float, float],
    user_token: str,
    url_token: str,
    npartitions: int,
) -> dd.DataFrame:
    """Normalise texts, assign splits by hash and flag exact duplicates, lazily.

    Copies of a text are brought together by a shuffle on its hash; the first (lowest
    ``source_row``) is kept and the others are flagged, not deleted, so they can be
    counted and inspected. There are ``npartitions`` partitions, or one per input
    partition (Parquet row group) when the input has more: a partition's rows, and so
    a task's memory, stay bounded however large the corpus grows.

    Args:
        frame: A ``text, label, source_row`` frame.
        seed: Seed of the text hash that assigns splits.
        fractions: (train, val, test) fractions.
        user_token: What ``@mentions`` become.
        url_token: What URLs become.
        npartitions: The fewest partitions of the result.

    Returns:
        :func:`normalize_partition`'s columns plus ``is_duplicate`` and
        ``duplicate_of``.

    Raises:
        ValueError: ``npartitions`` is below 1.
    """
    if npartitions < 1:
        raise ValueError(f"npartitions must be >= 1, got {npartitions}")
    npartitions = max(npartitions, frame.npartitions)
    frame = frame[["text", "label", "source_row"]].repartition(npartitions=npartitions)
    meta = normalize_partition(frame._meta, seed, fractions, "", "")
    normalized = frame.map_partitions(
        normalize_partition, seed, fractions, user_token, url_token, meta=meta
    )
    shuffled = normalized.shuffle(on="text_hash", npartitions=npartitions)
    marked_meta = mark_duplicates_partition(meta)
    return shuffled.map_partitions(mark_duplicates_partition, meta=marked_meta)


def encode_splits(
    normalized: dd.DataFrame,
    labels: Sequence[str],
    tokenizer: str,
    max_length: int,
) -> tuple[dd.DataFrame, dd.DataFrame, dd.DataFrame]:
    """Tokenise the kept (non-duplicate) rows of each split, lazily.

    Args:
        normalized: A frame from :func:`normalize_frame`.
        labels: The label vocabulary; a label's id is its position.
        tokenizer: The fast tokenizer's name or path (``builtin`` for the teacher's).
        max_length: Most tokens per text.

    Returns:
        Frames for train, val and test with ``input_ids``, ``attention_mask``,
        ``label`` (id), ``text`` and ``source_row``.

    Raises:
        ValueError: when computed, if a row's label is not in ``labels``.
    """
    label_to_id = {label: i for i, label in enumerate(labels)}
    # The tokenizer is loaded here and travels in the graph as one shared piece of
    # data: workers then import neither transformers nor torch (~2 s and ~220 MB
    # each) and need no copy of the model files.
    encoder = dask.delayed(load_encoder(tokenizer, max_length))
    kept = normalized[~normalized["is_duplicate"]]
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


def split_summary(normalized: dd.DataFrame) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Count duplicates, split sizes and class balance per split (one Dask compute).

    Args:
        normalized: A frame from :func:`normalize_frame`.

    Returns:
        The duplicate rows (``source_row``, ``duplicate_of``, ``text``, ``label``,
        ``split``; by ``source_row``) and ``{"duplicates": n, "split_sizes": {split:
        rows}, "class_balance": {split: {label: rows}}}`` over the kept rows.

    Raises:
        KeyError: ``normalized`` lacks a column :func:`normalize_frame` adds.
    """
    duplicates, table = dask.compute(
        normalized[normalized["is_duplicate"]][DUPLICATE_COLUMNS],
        normalized[~normalized["is_duplicate"]].groupby(["split", "label"]).size(),
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
    return duplicates, summary
