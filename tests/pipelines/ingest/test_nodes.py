"""Ingest nodes on tiny files: standard frame, label maps, repairs and bad columns."""

from pathlib import Path

import pandas as pd
import pytest

from distillery.pipelines.ingest.nodes import (
    IngestOptions,
    read_corpus,
    standardize_corpus,
)
from distillery.validation import DataContractError


def _ingest(path: Path, **overrides: object) -> dict:
    return {
        "source": str(path),
        "text_column": "review",
        "label_column": "rating",
    } | overrides


def test_standard_frame_from_other_column_names(tmp_path: Path) -> None:
    path = tmp_path / "reviews.tsv"
    path.write_text("review\trating\nsch\u00c3\u00b6n\t5\nmeh\t1\n", encoding="utf-8")
    params = _ingest(path, label_map={5: "positive", 1: "negative"})

    raw, manifest = read_corpus(params)
    frame, metrics = standardize_corpus(raw, manifest, params)

    assert list(frame.columns) == ["text", "label", "source_row"]
    assert frame["text"].tolist() == ["sch\u00f6n", "meh"]  # mojibake repaired
    assert frame["label"].tolist() == ["positive", "negative"]
    assert frame["source_row"].tolist() == [0, 1]
    assert metrics["texts_repaired"]["value"] == 1
    assert raw["review"].tolist()[0] == "sch\u00c3\u00b6n"  # the raw copy is untouched


def test_unmapped_labels_are_kept_for_validation_to_quarantine(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"review": ["a", "b"], "rating": [5, 3]}).to_csv(path, index=False)
    params = _ingest(path, label_map={"5": "positive"})

    raw, manifest = read_corpus(params)
    frame, _ = standardize_corpus(raw, manifest, params)

    assert frame["label"].tolist() == ["positive", "3"]


def test_numeric_labels_from_parquet_become_text(tmp_path: Path) -> None:
    path = tmp_path / "reviews.parquet"
    pd.DataFrame({"review": ["a", "b"], "rating": [1.0, 2.0]}).to_parquet(path)
    params = _ingest(path)

    raw, manifest = read_corpus(params)
    frame, _ = standardize_corpus(raw, manifest, params)

    assert frame["label"].tolist() == ["1", "2"]


def test_missing_label_column_stops_with_file_column_and_rule(tmp_path: Path) -> None:
    path = tmp_path / "reviews.csv"
    path.write_text("review,stars\ngood,5\n")
    params = _ingest(path)
    raw, manifest = read_corpus(params)

    with pytest.raises(DataContractError) as info:
        standardize_corpus(raw, manifest, params)

    assert info.value.rule == "column_exists"
    assert info.value.column == "rating"
    assert str(path) in str(info.value)


def test_options_reject_unknown_keys_and_same_columns() -> None:
    with pytest.raises(ValueError, match="unknown ingest key"):
        IngestOptions.from_params({"source": "builtin", "txt_column": "x"})
    with pytest.raises(ValueError, match="must differ"):
        IngestOptions(text_column="a", label_column="a")
