"""A transfer set: read from any supported file, cleaned as the corpus, kept apart from
the evaluation splits."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from distillery.ml.data.transfer import (
    TextCleaning,
    load_transfer_set,
    read_transfer_texts,
)

TEXTS = ["great crew thanks", "awful delay again", "lost my bag"]


def _empty_split() -> pd.DataFrame:
    return pd.DataFrame({"text": pd.Series([], dtype="string")})


def _write(path: Path, texts: list[str | None], column: str = "text") -> Path:
    frame = pd.DataFrame({column: texts, "id": range(len(texts))})
    if path.suffix == ".csv":
        frame.to_csv(path, index=False)
    elif path.suffix == ".parquet":
        frame.to_parquet(path)
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in frame.to_dict("records")))
    else:
        path.write_text("".join(f"{t}\n" for t in texts))
    return path


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl", ".txt"])
def test_every_format_reads_one_text_per_row(tmp_path: Path, suffix: str) -> None:
    path = _write(tmp_path / f"unlabelled{suffix}", TEXTS, column="tweet")

    texts, sha256 = read_transfer_texts(str(path), text_column="tweet")

    assert texts.tolist() == TEXTS
    assert texts.index.tolist() == [0, 1, 2]
    assert len(sha256) == 64


def test_texts_are_cleaned_as_the_corpus_and_filtered(tmp_path: Path) -> None:
    raw = [
        "sch\u00c3\u00b6n   flight @united",  # mojibake, spaces, a mention
        "mail me at jo@example.com",  # personal data
        "   ",  # blank once cleaned
        "new  text here",  # a repeat of the next line, but first
        "new text here",
        "val  text http://t.co/x",  # a validation text, other spacing and URL
        "test text",  # a test text
        "train text",  # already a training text
        "kept as is",
    ]
    path = _write(tmp_path / "unlabelled.csv", raw)
    train = pd.DataFrame({"text": ["train text"]})
    val = pd.DataFrame({"text": ["val text http"]})
    test = pd.DataFrame({"text": ["test text"]})

    frame, summary = load_transfer_set(
        str(path), "text", None, 0, TextCleaning(), train, [val, test]
    )

    assert frame["text"].tolist() == [
        "sch\u00f6n flight @user",
        "mail me at [EMAIL]",
        "new text here",
        "kept as is",
    ]
    # Negative, so a transfer row never names a corpus row; -1 - its row in the file.
    assert frame["source_row"].tolist() == [-1, -2, -4, -9]
    assert summary["counts"] == {
        "rows_in": 9,
        "kept": 4,
        "dropped_blank": 1,
        "dropped_eval_overlap": 2,
        "dropped_train_overlap": 1,
        "dropped_duplicate": 1,
    }
    assert summary["path"] == str(path) and summary["rows_read"] == 9


def test_the_stages_settings_decide_the_cleaning(tmp_path: Path) -> None:
    path = _write(tmp_path / "unlabelled.txt", ["ask @bob at jo@example.com"])
    cleaning = TextCleaning.from_params(
        {"user_token": "<u>", "url_token": "<url>"}, {"scrub_pii": False}
    )
    splits = (_empty_split(), [_empty_split(), _empty_split()])

    frame, _ = load_transfer_set(str(path), "text", None, 0, cleaning, *splits)

    assert frame["text"].tolist() == ["ask <u> at jo@example.com"]
    assert TextCleaning.from_params({}, {"repair": None}).repair is None
    assert TextCleaning.from_params({}, {}) == TextCleaning()


def test_max_rows_is_a_seeded_sample_in_file_order(tmp_path: Path) -> None:
    path = _write(tmp_path / "unlabelled.txt", [f"text number {i}" for i in range(20)])
    splits = (_empty_split(), [_empty_split(), _empty_split()])

    def sample(seed: int) -> list[int]:
        frame, summary = load_transfer_set(
            str(path), "text", 5, seed, TextCleaning(), *splits
        )
        assert summary["counts"]["rows_in"] == 5 and summary["rows_read"] == 20
        return frame["source_row"].tolist()

    rows = sample(3)
    assert len(rows) == 5 and rows == sorted(rows, reverse=True)
    assert sample(3) == rows
    assert sample(4) != rows


def _error(path: Path, column: str = "text") -> str:
    with pytest.raises((ValueError, FileNotFoundError)) as caught:
        read_transfer_texts(str(path), column)
    return str(caught.value)


def test_bad_files_name_the_file_and_the_rule(tmp_path: Path) -> None:
    missing = tmp_path / "missing.csv"
    with pytest.raises(FileNotFoundError, match="rule 'file_exists'"):
        read_transfer_texts(str(missing))
    assert str(missing) in _error(missing)

    unknown = tmp_path / "texts.pkl"
    unknown.write_bytes(b"not read")
    message = _error(unknown)
    assert str(unknown) in message and "rule 'supported_format'" in message
    assert ".csv, .parquet, .jsonl, .txt" in message

    corrupt = tmp_path / "corrupt.parquet"
    corrupt.write_bytes(b"PAR1 this is not parquet")
    message = _error(corrupt)
    assert str(corrupt) in message and "rule 'readable_parquet'" in message

    empty = tmp_path / "empty.txt"
    empty.write_text("")
    message = _error(empty)
    assert str(empty) in message and "rule 'non_empty_input'" in message


@pytest.mark.parametrize("suffix", [".csv", ".parquet", ".jsonl"])
def test_a_missing_column_lists_the_columns_the_file_has(
    tmp_path: Path, suffix: str
) -> None:
    path = _write(tmp_path / f"unlabelled{suffix}", TEXTS, column="tweet")

    message = _error(path, column="text")

    assert str(path) in message
    assert "rule 'text_column_exists'" in message
    assert "column 'text'" in message and "['tweet', 'id']" in message


@pytest.mark.parametrize(
    ("suffix", "where"), [(".csv", "column 'text'"), (".txt", "no line")]
)
def test_a_file_without_a_non_blank_text_is_an_error(
    tmp_path: Path, suffix: str, where: str
) -> None:
    path = _write(tmp_path / f"blank{suffix}", [" ", "", "\t"])
    splits = (_empty_split(), [_empty_split(), _empty_split()])

    with pytest.raises(ValueError, match="rule 'has_texts'") as caught:
        load_transfer_set(str(path), "text", None, 0, TextCleaning(), *splits)

    assert str(path) in str(caught.value) and where in str(caught.value)


def test_without_the_evaluation_splits_the_guard_refuses_to_run(tmp_path: Path) -> None:
    path = _write(tmp_path / "unlabelled.txt", TEXTS)

    with pytest.raises(ValueError, match="needs the validation and test rows"):
        load_transfer_set(
            str(path), "text", None, 0, TextCleaning(), _empty_split(), []
        )
