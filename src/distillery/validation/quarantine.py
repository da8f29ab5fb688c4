"""Split a frame into clean and quarantined rows, and prove that nothing was lost."""

from __future__ import annotations

import logging

import pandas as pd

logger = logging.getLogger(__name__)


def split_quarantine(
    frame: pd.DataFrame, reasons: pd.Series
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return ``(clean, quarantined)``; quarantined rows carry a ``reason`` column.

    Args:
        frame: the frame that was validated.
        reasons: per-row reason (``None`` for clean rows), indexed like ``frame``.

    Raises:
        RuntimeError: if the rows do not reconcile (in = clean + quarantined), which
            would mean a bug, never bad data.
    """
    failed = reasons.notna()
    clean = frame.loc[~failed].reset_index(drop=True)
    quarantined = (
        frame.loc[failed]
        .assign(reason=reasons[failed].astype(str))
        .reset_index(drop=True)
    )
    reconcile(len(frame), len(clean), len(quarantined))
    return clean, quarantined


def reconcile(rows_in: int, rows_clean: int, rows_quarantined: int) -> None:
    """Check and log rows in = rows clean + rows quarantined.

    Raises:
        RuntimeError: when the counts do not add up.
    """
    if rows_in != rows_clean + rows_quarantined:
        raise RuntimeError(
            f"Rows do not reconcile: {rows_in} in != {rows_clean} clean + "
            f"{rows_quarantined} quarantined"
        )
    logger.info(
        "Rows reconcile: %d in = %d clean + %d quarantined",
        rows_in,
        rows_clean,
        rows_quarantined,
    )
