"""Map a raw corpus frame to the standard ``text, label, source_row`` frame.

Whatever the source calls its columns, every later stage reads ``text`` (mojibake
repaired with ftfy), ``label`` (as text) and ``source_row`` (the 0-based data row in
the source file, so every later output points back to its line).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import ftfy
import pandas as pd

logger = logging.getLogger(__name__)

STANDARD_COLUMNS = ("text", "label", "source_row")


def label_text(value: object) -> str:
    """Labels as text: ``1``, ``1.0`` and ``"1"`` all become ``"1"``.

    Args:
        value: A label as read (YAML, CSV, Parquet and ``--params`` disagree on types).

    Returns:
        The label as a string, integral floats without their ``.0``.
    """
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def fix_mojibake(texts: pd.Series) -> tuple[pd.Series, int]:
    """Repair mojibake with ftfy; anything that is not a string becomes ``<NA>``.

    Args:
        texts: Texts as read.

    Returns:
        The repaired texts (object dtype, indexed like ``texts``) and how many ftfy
        changed.
    """
    text = texts.map(lambda t: ftfy.fix_text(t) if isinstance(t, str) else pd.NA)
    return text, int(((text != texts) & texts.notna()).sum())


def standardize_frame(
    raw: pd.DataFrame,
    text_column: str,
    label_column: str,
    label_map: Mapping[object, object] | None = None,
) -> tuple[pd.DataFrame, int]:
    """Build the standard frame from ``raw``'s text and label columns.

    Args:
        raw: The corpus as read; it is not modified.
        text_column: The column holding the texts.
        label_column: The column holding the labels.
        label_map: Raw label -> label. Unmapped labels stay as written, so validation
            quarantines them as unknown.

    Returns:
        The frame (``text`` and ``label`` as ``string``, missing values as ``<NA>``,
        ``source_row`` as int64) and how many texts ftfy changed.

    Raises:
        ValueError: ``raw`` has no column ``text_column`` or ``label_column``.
    """
    missing = [c for c in (text_column, label_column) if c not in raw.columns]
    if missing:
        raise ValueError(
            f"columns {missing} are not in the frame; it has {list(raw.columns)}"
        )
    text, repaired = fix_mojibake(raw[text_column])
    label = raw[label_column].map(lambda v: pd.NA if pd.isna(v) else label_text(v))
    if label_map is not None:
        mapping = {label_text(k): str(v) for k, v in label_map.items()}
        label = label.map(lambda v: mapping.get(v, v) if isinstance(v, str) else v)
    frame = pd.DataFrame(
        {
            "text": text.astype("string"),
            "label": label.astype("string"),
            "source_row": pd.RangeIndex(len(raw)).to_numpy(dtype="int64"),
        }
    )
    return frame, repaired


def sample_frame(frame: pd.DataFrame, rows: int | None, seed: int) -> pd.DataFrame:
    """A seeded sample of ``rows`` rows for quick runs, in ``source_row`` order.

    Args:
        frame: A standard frame.
        rows: How many rows to keep; ``None`` (or at least ``len(frame)``) keeps all.
        seed: The sample's random state.

    Returns:
        ``frame`` itself when nothing is dropped, else the sampled rows with a fresh
        index; each keeps its ``source_row``.

    Raises:
        ValueError: ``rows`` is below 1.
    """
    if rows is not None and rows < 1:
        raise ValueError(f"sample rows must be >= 1 or None, got {rows}")
    if rows is None or rows >= len(frame):
        return frame
    sampled = (
        frame.sample(n=rows, random_state=seed)
        .sort_values("source_row")
        .reset_index(drop=True)
    )
    logger.info("Sampled %d of %d source rows", len(sampled), len(frame))
    return sampled
