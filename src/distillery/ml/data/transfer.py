"""A transfer set: unlabelled in-domain texts the teacher labels for the students.

The file (CSV, Parquet, JSONL or TXT with one text a line) is read as text, never
unpickled. Its texts go through the corpus's own cleaning, in the corpus's order:
ftfy (ingest), the repair of undecodable bytes and the personal-data scrub (validate),
then the placeholders and whitespace of :func:`~distillery.ml.data.text.normalize_text`
(preprocess). Blank texts are dropped, and so is any text equal to a validation or test
text after that normalisation, the key preprocess finds duplicates by: a text the
students learn from must never be one they are scored on. Texts of the training split
are dropped as already present, and repeats within the set keep their first row.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Any

import fsspec
import pandas as pd

from distillery.ml.data.corpus import parse_table
from distillery.ml.data.pii import scrub_texts
from distillery.ml.data.standardize import fix_mojibake
from distillery.ml.data.text import normalize_text
from distillery.validation.repair import RepairOptions, repair_texts

logger = logging.getLogger(__name__)

TRANSFER_SUFFIXES = (".csv", ".parquet", ".jsonl", ".txt")
COUNTS = (
    "rows_in",
    "kept",
    "dropped_blank",
    "dropped_eval_overlap",
    "dropped_train_overlap",
    "dropped_duplicate",
)


@dataclass(frozen=True)
class TextCleaning:
    """What the corpus's texts went through (``params:validate``, ``params:preprocess``).

    Attributes:
        user_token: What ``@mentions`` became.
        url_token: What URLs became.
        repair: The repair of undecodable bytes; None = off.
        scrub_pii: Whether personal data was replaced by placeholders.
    """

    user_token: str = "@user"
    url_token: str = "http"
    repair: RepairOptions | None = RepairOptions()
    scrub_pii: bool = True

    @classmethod
    def from_params(
        cls, preprocess: Mapping[str, Any], validate: Mapping[str, Any]
    ) -> TextCleaning:
        """The cleaning the corpus got, read from those stages' parameters.

        Args:
            preprocess: ``params:preprocess`` (``user_token``, ``url_token``).
            validate: ``params:validate`` (``repair``, ``scrub_pii``).

        Returns:
            The settings; a key left out takes that stage's own default.
        """
        repair = validate.get("repair", {})
        return cls(
            user_token=str(preprocess.get("user_token", cls.user_token)),
            url_token=str(preprocess.get("url_token", cls.url_token)),
            repair=None if repair is None else RepairOptions(**repair),
            scrub_pii=bool(validate.get("scrub_pii", cls.scrub_pii)),
        )

    def clean(self, texts: pd.Series) -> pd.Series:
        """``texts`` cleaned as the corpus was; a missing text becomes ``""``.

        Args:
            texts: Raw texts (anything that is not a string counts as missing).

        Returns:
            The cleaned texts (``string`` dtype), indexed like ``texts``.
        """
        fixed, _ = fix_mojibake(texts)
        fixed = fixed.fillna("").astype(str)
        if self.repair is not None:
            fixed, _ = repair_texts(fixed, self.repair)
        values = fixed.tolist()
        if self.scrub_pii:
            values, _ = scrub_texts(values)
        normalized = [
            normalize_text(t, self.user_token, self.url_token) for t in values
        ]
        return pd.Series(normalized, index=texts.index, dtype="string")


def _error(file: str, rule: str, detail: str) -> str:
    return f"Cannot read transfer set: file '{file}', rule '{rule}': {detail}"


def transfer_suffix(path: str) -> str:
    """The file type of ``path``, by its suffix.

    Args:
        path: A local path or fsspec URI.

    Returns:
        ``.csv``, ``.parquet``, ``.jsonl`` or ``.txt``.

    Raises:
        ValueError: any other suffix (rule ``supported_format``).
    """
    suffix = PurePosixPath(path.split("?", 1)[0]).suffix.lower()
    if suffix not in TRANSFER_SUFFIXES:
        raise ValueError(
            _error(
                path,
                "supported_format",
                f"extension '{suffix or '(none)'}' is not one of "
                f"{', '.join(TRANSFER_SUFFIXES)}",
            )
        )
    return suffix


def read_transfer_texts(path: str, text_column: str = "text") -> tuple[pd.Series, str]:
    """The raw texts of a transfer-set file, one per row, and the file's sha256.

    Args:
        path: A local path or fsspec URI ending in .csv, .parquet, .jsonl or .txt.
        text_column: The column holding the texts (not read for .txt).

    Returns:
        The texts as read (missing cells as NaN), indexed by row from 0, and the
        sha256 of the file's bytes.

    Raises:
        FileNotFoundError: no such file (rule ``file_exists``).
        ValueError: an unsupported suffix, an empty or unreadable file, or no column
            ``text_column`` (the message lists the columns the file has); each message
            names the file, the column where one is read, and the rule.
    """
    suffix = transfer_suffix(path)
    try:
        with fsspec.open(path, "rb") as handle:
            payload = handle.read()
    except FileNotFoundError as exc:
        raise FileNotFoundError(_error(path, "file_exists", "no such file")) from exc
    if not payload:
        raise ValueError(_error(path, "non_empty_input", "the file is empty (0 bytes)"))
    column = "text" if suffix == ".txt" else text_column
    try:
        frame = _parse(payload, suffix, column)
    except (ValueError, TypeError, OSError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(_error(path, f"readable_{suffix[1:]}", detail)) from exc
    if column not in frame.columns:
        raise ValueError(
            _error(
                path,
                "text_column_exists",
                f"column '{column}' (transfer_set.text_column) is not in the file; "
                f"it has {[str(c) for c in frame.columns]}",
            )
        )
    return frame[column].reset_index(drop=True), hashlib.sha256(payload).hexdigest()


def _parse(payload: bytes, suffix: str, column: str) -> pd.DataFrame:
    """The rows of one file: a TXT file's lines, else the corpus reader's table."""
    if suffix == ".txt":
        lines = payload.decode("utf-8", errors="replace").splitlines()
        return pd.DataFrame({column: lines}, dtype=object)
    return parse_table(payload, suffix, {})


def select_transfer_texts(
    texts: pd.Series,
    cleaning: TextCleaning,
    train_texts: Iterable[str],
    eval_texts: Iterable[str],
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Clean the texts and drop blanks, evaluation and training texts and repeats.

    Args:
        texts: Raw texts indexed by their row in the file.
        cleaning: What the corpus's texts went through.
        train_texts: The training split's texts (already normalised).
        eval_texts: The validation and test splits' texts (already normalised).

    Returns:
        ``text`` and ``source_row`` (``-1 - row``: negative, so it never names a
        corpus row) of the kept texts in file order, and :data:`COUNTS` (each text is
        counted once, by the first rule it fails in that order).
    """
    clean = cleaning.clean(texts)
    blank = clean.str.len() == 0
    evaluation = ~blank & clean.isin(set(eval_texts))
    training = ~blank & ~evaluation & clean.isin(set(train_texts))
    rest = clean[~(blank | evaluation | training)]
    repeat = rest.duplicated(keep="first")
    kept = rest[~repeat]
    counts = {
        "rows_in": len(texts),
        "kept": len(kept),
        "dropped_blank": int(blank.sum()),
        "dropped_eval_overlap": int(evaluation.sum()),
        "dropped_train_overlap": int(training.sum()),
        "dropped_duplicate": int(repeat.sum()),
    }
    frame = pd.DataFrame(
        {
            "text": kept.reset_index(drop=True),
            "source_row": pd.Series(-1 - kept.index.to_numpy(), dtype="int64"),
        }
    )
    return frame, counts


def load_transfer_set(
    path: str,
    text_column: str,
    max_rows: int | None,
    seed: int,
    cleaning: TextCleaning,
    train: pd.DataFrame,
    evaluation: Sequence[pd.DataFrame],
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Read, sample, clean and filter a transfer set against the corpus's splits.

    Args:
        path: The file (:func:`read_transfer_texts`).
        text_column: Its text column (not read for .txt).
        max_rows: A seeded sample of this many rows (in file order); None = all.
        seed: The sample's random state.
        cleaning: What the corpus's texts went through.
        train: The training rows present (with ``text``): transfer texts equal to
            one are dropped as already there.
        evaluation: The validation and test rows (with ``text``): the guard.

    Returns:
        The kept texts (:func:`select_transfer_texts`) and a summary: ``path``,
        ``sha256``, ``rows_read`` and ``counts`` (``rows_in`` counts the sample).

    Raises:
        FileNotFoundError: no such file.
        ValueError: as :func:`read_transfer_texts`, when no text is left once
            blank ones are dropped (rule ``has_texts``), or without ``evaluation``
            (the overlap guard would be off).
    """
    if not evaluation:
        raise ValueError(
            f"the transfer set {path} needs the validation and test rows: texts "
            "equal to one of theirs must be dropped"
        )
    texts, sha256 = read_transfer_texts(path, text_column)
    rows_read = len(texts)
    if max_rows is not None and max_rows < rows_read:
        texts = texts.sample(n=max_rows, random_state=seed).sort_index()
    eval_texts = [t for split in evaluation for t in split["text"].astype(str)]
    frame, counts = select_transfer_texts(
        texts, cleaning, train["text"].astype(str), eval_texts
    )
    if counts["dropped_blank"] == counts["rows_in"]:
        where = (
            "no line"
            if transfer_suffix(path) == ".txt"
            else f"no row of column '{text_column}'"
        )
        raise ValueError(_error(path, "has_texts", f"{where} holds a non-blank text"))
    logger.info(
        "Transfer set %s: %d of %d rows kept; dropped %d blank, %d equal to a "
        "validation or test text, %d equal to a training text, %d repeats",
        path,
        counts["kept"],
        counts["rows_in"],
        counts["dropped_blank"],
        counts["dropped_eval_overlap"],
        counts["dropped_train_overlap"],
        counts["dropped_duplicate"],
    )
    summary = {"path": path, "sha256": sha256, "rows_read": rows_read}
    return frame, summary | {"counts": counts}
