"""The expectation registry: each row rule and each contract rule, on tiny frames."""

import pandas as pd
import pytest

from distillery.validation import DataContractError
from distillery.validation.quarantine import reconcile, split_quarantine
from distillery.validation.suites import (
    check_classes,
    check_columns,
    check_non_empty,
    find_row_failures,
)

OPTIONS = {"max_text_chars": 20, "labels": ("neg", "pos"), "skip_row_rules": ()}


def _frame(texts: list, labels: list) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": pd.Series(texts, dtype="string"),
            "label": pd.Series(labels, dtype="string"),
            "source_row": range(len(texts)),
        }
    )


def test_each_row_rule_quarantines_its_rows_with_its_reason() -> None:
    frame = _frame(
        ["fine", None, "   ", "bad \ufffd byte", "x" * 21, "ok", "ok too"],
        ["pos", "neg", "pos", "neg", "pos", None, "maybe"],
    )

    reasons, outcomes = find_row_failures(frame, OPTIONS)

    assert reasons.tolist() == [
        None,
        "missing_text",
        "blank_text",
        "undecodable_text",
        "text_too_long",
        "missing_label",
        "unknown_label",
    ]
    assert {o.name: o.unexpected_count for o in outcomes} == {
        "missing_text": 1,
        "blank_text": 1,
        "undecodable_text": 1,
        "text_too_long": 1,
        "missing_label": 1,
        "unknown_label": 1,
    }


def test_a_row_breaking_two_rules_gets_the_first_reason_in_registry_order() -> None:
    frame = _frame(["\ufffd" * 30], ["pos"])
    reasons, _ = find_row_failures(frame, OPTIONS)
    assert reasons.tolist() == ["undecodable_text"]


def test_skipped_rules_and_open_label_sets_let_rows_through() -> None:
    frame = _frame(["bad \ufffd", "fine"], ["anything", "else"])
    options = {
        "max_text_chars": 20,
        "labels": None,
        "skip_row_rules": ("undecodable_text",),
    }
    reasons, outcomes = find_row_failures(frame, options)
    assert reasons.isna().all()
    assert "unknown_label" not in {o.name for o in outcomes}


def test_quarantine_reconciles_and_keeps_every_column() -> None:
    frame = _frame(["fine", None, "also fine"], ["pos", "neg", "neg"])
    reasons, _ = find_row_failures(frame, OPTIONS)

    clean, quarantined = split_quarantine(frame, reasons)

    assert len(clean) + len(quarantined) == len(frame)
    assert clean["source_row"].tolist() == [0, 2]
    assert quarantined[["source_row", "reason"]].values.tolist() == [
        [1, "missing_text"]
    ]


def test_reconcile_refuses_counts_that_do_not_add_up() -> None:
    with pytest.raises(RuntimeError, match="do not reconcile"):
        reconcile(10, 6, 3)


def test_missing_column_names_file_column_and_rule() -> None:
    raw = pd.DataFrame({"text": ["a"], "stars": ["1"]})
    with pytest.raises(DataContractError) as info:
        check_columns(raw, {"text": "text", "label": "rating"}, "reviews.csv")
    assert (info.value.file, info.value.column, info.value.rule) == (
        "reviews.csv",
        "rating",
        "column_exists",
    )
    assert "stars" in str(info.value)


def test_empty_input_is_a_contract_failure() -> None:
    with pytest.raises(DataContractError, match="non_empty_input"):
        check_non_empty(_frame([], []), "empty.csv")


def test_a_single_class_is_a_contract_failure() -> None:
    with pytest.raises(DataContractError) as info:
        check_classes(_frame(["a", "b"], ["pos", "pos"]), 2, 1, "one.csv")
    assert (info.value.column, info.value.rule) == ("label", "min_classes")


def test_a_rare_class_is_a_contract_failure() -> None:
    frame = _frame(["a", "b", "c", "d"], ["pos", "pos", "pos", "neg"])
    with pytest.raises(DataContractError, match="min_rows_per_class") as info:
        check_classes(frame, 2, 2, "rare.csv")
    assert "'neg': 1" in str(info.value)


def test_enough_classes_pass_and_report_the_balance() -> None:
    outcomes = check_classes(
        _frame(["a", "b", "c"], ["pos", "neg", "pos"]), 2, 1, "f.csv"
    )
    assert [o.name for o in outcomes] == ["min_classes", "min_rows_per_class"]
    assert outcomes[1].observed == "neg: 1, pos: 2"
