"""The bad-input matrix: every case ends in a clear error or a quarantine with a reason.

Each case runs the real ingest and validate nodes on a file the test writes. A clear
error names the file, the column (where there is one) and the rule; a quarantine keeps
every row with a reason, and rows in = clean + quarantined.
"""

from pathlib import Path

import dask
import dask.dataframe as dd
import pandas as pd
import pytest

from distillery.ml.data.corpus import SourceError
from distillery.pipelines.ingest.nodes import read_corpus, standardize_corpus
from distillery.pipelines.preprocess.nodes import normalize_texts, summarize_preprocess
from distillery.pipelines.validate.nodes import validate_corpus
from distillery.validation import DataContractError

GOOD = [(f"fine text number {i}", "pos" if i % 2 else "neg") for i in range(8)]
VALIDATE = {"min_rows_per_class": 2, "max_text_chars": 1000}


def _write_csv(path: Path, rows: list[tuple], header: str = "text,label") -> Path:
    frame = pd.DataFrame(rows, columns=header.split(","))
    frame.to_csv(path, index=False)
    return path


def _ingest(path: Path, **extra: object) -> dict:
    return {"source": str(path), "text_column": "text", "label_column": "label"} | extra


def _run(
    params: dict, validate: dict | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    raw, manifest = read_corpus(params)
    frame, _ = standardize_corpus(raw, manifest, params)
    clean, quarantined, _, _, summary, _ = validate_corpus(
        frame, manifest, validate or VALIDATE, params
    )
    assert len(clean) + len(quarantined) == len(frame) == summary["counts"]["rows_in"]
    return clean, quarantined


@pytest.mark.parametrize("missing", ["text", "label"])
def test_missing_column(tmp_path: Path, missing: str) -> None:
    header = "body,label" if missing == "text" else "text,stars"
    path = _write_csv(tmp_path / "c.csv", GOOD, header)
    with pytest.raises(DataContractError) as info:
        _run(_ingest(path))
    assert (info.value.column, info.value.rule) == (missing, "column_exists")
    assert str(path) in str(info.value)


def test_label_outside_label_map_is_quarantined(tmp_path: Path) -> None:
    rows = [(t, "1" if y == "neg" else "5") for t, y in GOOD] + [("odd one", "3")]
    path = _write_csv(tmp_path / "c.csv", rows)
    clean, quarantined = _run(_ingest(path, label_map={"1": "neg", "5": "pos"}))
    assert quarantined[["text", "reason"]].values.tolist() == [
        ["odd one", "unknown_label"]
    ]
    assert set(clean["label"]) == {"neg", "pos"}


def test_empty_whitespace_and_nan_text_are_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text(
        "text,label\n"
        + "".join(f"{t},{y}\n" for t, y in GOOD)
        + ',pos\n"   ",neg\n"\t",pos\n'
    )
    _, quarantined = _run(_ingest(path))
    assert sorted(quarantined["reason"]) == ["blank_text", "blank_text", "missing_text"]


def test_invalid_utf8_is_repaired_or_quarantined_not_lost(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    body = "".join(f"{t},{y}\n" for t, y in GOOD).encode()
    path.write_bytes(
        b"text,label\n"
        + body
        + b"broken \xff\xfe bytes,pos\n"
        + b"I can\xe2\x80t believe the crew was this kind,pos\n"
    )
    clean, quarantined = _run(_ingest(path))
    # Two words left: unreadable, quarantined. A readable rest: repaired and kept.
    assert quarantined["reason"].tolist() == ["undecodable_text"]
    assert quarantined["source_row"].tolist() == [len(GOOD)]
    kept = clean.set_index("source_row").loc[len(GOOD) + 1, "text"]
    assert kept == "I can't believe the crew was this kind"


def test_a_one_megabyte_text_is_quarantined(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "c.csv", [*GOOD, ("x" * 1_000_000, "pos")])
    _, quarantined = _run(_ingest(path))
    assert quarantined["reason"].tolist() == ["text_too_long"]


def test_exact_and_near_duplicates_are_counted_and_kept_aside(tmp_path: Path) -> None:
    rows = [*GOOD, (GOOD[0][0], GOOD[0][1]), ("@alice  " + GOOD[1][0], GOOD[1][1])]
    path = _write_csv(
        tmp_path / "c.csv",
        [("@bob " + t, y) if i == 1 else (t, y) for i, (t, y) in enumerate(rows)],
    )
    clean, _ = _run(_ingest(path))
    options = {"npartitions": 2, "tokenizer": "builtin", "max_length": 32}
    with dask.config.set(scheduler="synchronous"):
        normalized = normalize_texts(dd.from_pandas(clean, npartitions=2), options)
        duplicates, summary, _ = summarize_preprocess(normalized.persist())
    # Row 8 repeats row 0 exactly; row 9 repeats row 1 once mentions and spaces are normalised.
    assert duplicates[["source_row", "duplicate_of"]].values.tolist() == [
        [8, 0],
        [9, 1],
    ]
    assert sum(summary["split_sizes"].values()) + summary["duplicates"] == len(clean)


def test_zero_byte_file(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_bytes(b"")
    with pytest.raises(SourceError, match="non_empty_input") as info:
        _run(_ingest(path))
    assert str(path) in str(info.value)


def test_header_only_file(tmp_path: Path) -> None:
    path = tmp_path / "c.csv"
    path.write_text("text,label\n")
    with pytest.raises(DataContractError) as info:
        _run(_ingest(path))
    assert info.value.rule == "non_empty_input"


def test_truncated_parquet(tmp_path: Path) -> None:
    good = tmp_path / "good.parquet"
    pd.DataFrame(GOOD, columns=["text", "label"]).to_parquet(good)
    path = tmp_path / "c.parquet"
    path.write_bytes(good.read_bytes()[:-40])
    with pytest.raises(SourceError, match="readable_parquet") as info:
        _run(_ingest(path))
    assert str(path) in str(info.value)


def test_numeric_labels(tmp_path: Path) -> None:
    path = tmp_path / "c.parquet"
    pd.DataFrame(
        {"text": [t for t, _ in GOOD], "label": [i % 2 for i in range(8)]}
    ).to_parquet(path)
    clean, quarantined = _run(_ingest(path))
    assert sorted(set(clean["label"])) == ["0", "1"] and quarantined.empty


def test_only_one_class(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "c.csv", [(t, "pos") for t, _ in GOOD])
    with pytest.raises(DataContractError) as info:
        _run(_ingest(path))
    assert (info.value.column, info.value.rule) == ("label", "min_classes")


def test_path_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="file_exists"):
        _run(_ingest(tmp_path / "nope.csv"))


def test_unsupported_extension(tmp_path: Path) -> None:
    path = tmp_path / "c.xlsx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(SourceError, match="supported_format") as info:
        _run(_ingest(path))
    assert ".xlsx" in str(info.value)
