"""validate_corpus: counts reconcile, reasons are kept, contracts stop the run."""

import pandas as pd
import pytest

from distillery.pipelines.validate.nodes import validate_corpus
from distillery.validation import DataContractError

MANIFEST = {"path": "tiny.csv", "sha256": "0" * 64}
INGEST = {"source": "tiny.csv", "text_column": "t", "label_column": "l"}


def _frame(rows: list[tuple]) -> pd.DataFrame:
    texts, labels = zip(*rows, strict=True) if rows else ((), ())
    return pd.DataFrame(
        {
            "text": pd.Series(texts, dtype="string"),
            "label": pd.Series(labels, dtype="string"),
            "source_row": range(len(rows)),
        }
    )


def test_rows_reconcile_and_every_output_agrees() -> None:
    rows = [("good", "pos")] * 3 + [("bad", "neg")] * 3 + [(None, "pos"), ("  ", "neg")]
    params = {"min_rows_per_class": 2, "labels": ["pos", "neg"]}

    clean, quarantined, repaired, report, summary, metrics = validate_corpus(
        _frame(rows), MANIFEST, params, INGEST
    )

    assert len(clean) + len(quarantined) == len(rows)
    assert sorted(quarantined["reason"]) == ["blank_text", "missing_text"]
    assert summary["counts"]["rows_quarantined"] == 2
    assert metrics["quarantined.missing_text"]["value"] == 1.0
    assert "blank_text" in report and "tiny.csv" in report
    assert repaired.empty and summary["counts"]["rows_repaired"] == 0


def test_damaged_rows_are_repaired_counted_and_still_reconcile() -> None:
    rows = [("good", "pos")] * 3 + [("fine", "neg")] * 3
    rows += [
        ("I can\ufffd\ufffd\ufffdt wait for the flight _\ufffd\ufffd_", "pos"),
        ("_\ufffd\ufffd\ufffd\ufffd_ ok _\ufffd\ufffd\ufffd\ufffd_", "neg"),
    ]
    params = {"min_rows_per_class": 2}

    clean, quarantined, repaired, report, summary, metrics = validate_corpus(
        _frame(rows), MANIFEST, params, INGEST
    )

    assert len(clean) + len(quarantined) == len(rows)
    assert "I can't wait for the flight" in clean["text"].tolist()
    assert quarantined["reason"].tolist() == ["undecodable_text"]
    assert quarantined["source_row"].tolist() == [7]
    assert repaired["source_row"].tolist() == [6]
    assert repaired.loc[0, "repaired"] == "I can't wait for the flight"
    assert summary["counts"]["rows_repaired"] == 1
    assert metrics["rows_repaired"]["value"] == 1.0
    assert "I can&#x27;t wait for the flight" in report


def test_repair_can_be_switched_off() -> None:
    rows = [("good", "pos")] * 3 + [("fine", "neg")] * 3
    rows += [("I can\ufffd\ufffd\ufffdt wait for the flight", "pos")]

    _, quarantined, repaired, *_ = validate_corpus(
        _frame(rows), MANIFEST, {"min_rows_per_class": 2, "repair": None}, INGEST
    )

    assert quarantined["reason"].tolist() == ["undecodable_text"] and repaired.empty


def test_label_map_values_are_the_allowed_labels() -> None:
    rows = [("a", "pos")] * 2 + [("b", "neg")] * 2 + [("c", "3")]
    ingest = INGEST | {"label_map": {"5": "pos", "1": "neg"}}

    _, quarantined, *_ = validate_corpus(
        _frame(rows), MANIFEST, {"min_rows_per_class": 1}, ingest
    )

    assert quarantined["reason"].tolist() == ["unknown_label"]


@pytest.mark.parametrize(
    ("rows", "rule"),
    [
        ([], "non_empty_input"),
        ([("a", "pos"), ("b", "pos")], "min_classes"),
        ([("a", "pos")] * 5 + [("b", "neg")], "min_rows_per_class"),
        (
            [("a", "pos")] * 5 + [(None, "neg")] * 5,
            "min_classes",
        ),  # only one valid class
    ],
)
def test_contract_failures_stop_the_run(rows: list[tuple], rule: str) -> None:
    with pytest.raises(DataContractError) as info:
        validate_corpus(_frame(rows), MANIFEST, {"min_rows_per_class": 2}, INGEST)
    assert info.value.rule == rule
    assert info.value.file == "tiny.csv"
