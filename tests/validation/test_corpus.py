"""validate_frame: the repair → rules → quarantine → class-contract sequence and its counts."""

import pandas as pd
import pytest

from distillery.validation import DataContractError
from distillery.validation.corpus import (
    ValidateOptions,
    allowed_labels,
    validate_frame,
    validation_report,
    validation_summary,
)

FILE = "tiny.csv"
DAMAGED = "I can\ufffd\ufffd\ufffdt wait for the flight _\ufffd\ufffd_"


def _frame(rows: list[tuple]) -> pd.DataFrame:
    texts, labels = zip(*rows, strict=True) if rows else ((), ())
    return pd.DataFrame(
        {
            "text": pd.Series(texts, dtype="string"),
            "label": pd.Series(labels, dtype="string"),
            "source_row": range(len(rows)),
        }
    )


def test_validate_options_are_checked() -> None:
    with pytest.raises(ValueError, match="skip_row_rules"):
        ValidateOptions(skip_row_rules=("no_such_rule",))
    with pytest.raises(ValueError, match="min_classes"):
        ValidateOptions(min_classes=1)


def test_options_from_params_build_repair_options_and_reject_unknown_keys() -> None:
    options = ValidateOptions.from_params({"repair": {"min_words": 2}, "labels": [1]})
    assert options.repair is not None and options.repair.min_words == 2
    assert options.labels == ("1",)
    with pytest.raises(ValueError, match="unknown validate key"):
        ValidateOptions.from_params({"max_chars": 5})


def test_allowed_labels_prefer_the_options_then_the_label_map() -> None:
    label_map = {"5": "pos", "1": "neg", "4": "pos"}
    assert allowed_labels(ValidateOptions(labels=("a",)), label_map) == ("a",)
    assert allowed_labels(ValidateOptions(), label_map) == ("neg", "pos")
    assert allowed_labels(ValidateOptions(), None) is None
    assert allowed_labels(ValidateOptions(), {}) is None


def test_result_holds_frames_counts_outcomes_and_examples() -> None:
    rows = [("good", "pos")] * 3 + [("fine", "neg")] * 3
    rows += [(DAMAGED, "pos"), (None, "neg"), ("  ", "pos"), ("odd", "meh")]
    options = ValidateOptions(min_rows_per_class=2, report_examples=1)

    result = validate_frame(_frame(rows), FILE, options, {"5": "pos", "1": "neg"})

    assert len(result.clean) + len(result.quarantined) == len(rows)
    assert result.counts == {
        "rows_in": 10,
        "rows_clean": 7,
        "rows_quarantined": 3,
        "rows_repaired": 1,
        "quarantined.blank_text": 1,
        "quarantined.missing_text": 1,
        "quarantined.unknown_label": 1,
        "class.neg": 3,
        "class.pos": 4,
        "pii.email": 0,
        "pii.card": 0,
        "pii.ip": 0,
        "pii.phone": 0,
    }
    assert result.quarantine_examples == {
        "blank_text": ["  "],
        "missing_text": ["<NaN>"],
        "unknown_label": ["odd"],
    }
    assert result.repair_examples == [(DAMAGED, "I can't wait for the flight")]
    assert result.repaired.columns.tolist() == [
        "source_row",
        "original",
        "repaired",
        "damaged_share",
    ]
    assert result.repaired["source_row"].tolist() == [6]
    assert result.outcomes[0].name == "non_empty_input"
    assert {"min_classes", "min_rows_per_class"} <= {o.name for o in result.outcomes}


def test_personal_data_in_clean_texts_is_replaced_and_counted() -> None:
    rows = [("mail jo@example.com or call 212-555-0199", "pos"), ("fine", "pos")]
    rows += [("card 4111 1111 1111 1111 was charged", "neg"), ("ok", "neg")]
    frame = _frame(rows)
    options = ValidateOptions(min_rows_per_class=1)

    result = validate_frame(frame, FILE, options)

    assert result.clean["text"].tolist() == [
        "mail [EMAIL] or call [PHONE]",
        "fine",
        "card [CARD] was charged",
        "ok",
    ]
    assert result.clean["text"].dtype == frame["text"].dtype
    pii = {k: v for k, v in result.counts.items() if k.startswith("pii.")}
    assert pii == {"pii.email": 1, "pii.card": 1, "pii.ip": 0, "pii.phone": 1}
    kept = validate_frame(
        frame, FILE, ValidateOptions(min_rows_per_class=1, scrub_pii=False)
    )
    assert kept.clean["text"].tolist() == frame["text"].tolist()
    assert not any(k.startswith("pii.") for k in kept.counts)


def test_input_frame_is_not_modified() -> None:
    frame = _frame([("good", "pos")] * 2 + [("fine", "neg")] * 2 + [(DAMAGED, "pos")])
    before = frame.copy()

    result = validate_frame(frame, FILE, ValidateOptions(min_rows_per_class=1))

    pd.testing.assert_frame_equal(frame, before)
    assert "I can't wait for the flight" in result.clean["text"].tolist()


def test_without_repair_damaged_rows_are_quarantined_and_nothing_is_repaired() -> None:
    rows = [("good", "pos")] * 2 + [("fine", "neg")] * 2 + [(DAMAGED, "pos")]
    options = ValidateOptions(min_rows_per_class=1, repair=None)

    result = validate_frame(_frame(rows), FILE, options)

    assert result.quarantined["reason"].tolist() == ["undecodable_text"]
    assert result.repaired.empty and result.repair_examples == []
    assert result.counts["rows_repaired"] == 0


@pytest.mark.parametrize(
    ("rows", "rule"),
    [
        ([], "non_empty_input"),
        ([("a", "pos")] * 3 + [(None, "neg")] * 3, "min_classes"),
        ([("a", "pos")] * 3 + [("b", "neg")], "min_rows_per_class"),
    ],
)
def test_broken_contracts_raise_naming_the_file_and_rule(
    rows: list[tuple], rule: str
) -> None:
    with pytest.raises(DataContractError) as info:
        validate_frame(_frame(rows), FILE, ValidateOptions(min_rows_per_class=2))
    assert (info.value.file, info.value.rule) == (FILE, rule)


def test_summary_and_report_describe_the_result() -> None:
    rows = [("good day", "pos")] * 2 + [("bad day", "neg")] * 2 + [("  ", "pos")]
    result = validate_frame(_frame(rows), FILE, ValidateOptions(min_rows_per_class=1))

    summary = validation_summary(result, FILE, "ab" * 32)
    report = validation_report(result, FILE)

    assert list(summary) == ["source", "sha256", "counts", "profile", "rules"]
    assert (summary["source"], summary["sha256"]) == (FILE, "ab" * 32)
    assert summary["counts"] is result.counts
    assert [r["name"] for r in summary["rules"]] == [o.name for o in result.outcomes]
    assert summary["profile"]["rows"] == 4
    assert report.startswith("<!doctype html>")
    assert FILE in report and "blank_text" in report
