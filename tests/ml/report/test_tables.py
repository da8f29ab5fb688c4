"""Comparison table built from hand-made evaluations."""

from __future__ import annotations

import pytest

from distillery.ml.report.tables import (
    comparison_table_markdown,
    find_evaluation,
    format_factor,
    format_mb,
    markdown_table,
)


def _rows(table: str) -> dict[str, list[str]]:
    """Table body keyed by model name, cells stripped."""
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


def test_comparison_table_has_a_row_per_model_in_order(evaluations) -> None:
    table = comparison_table_markdown(evaluations, "teacher")
    lines = table.splitlines()
    assert len(lines) == 2 + len(evaluations)
    assert "F1 retained" in lines[0] and "latency ratio" in lines[0]
    assert [line.split("|")[1].strip() for line in lines[2:]] == [
        e.name for e in evaluations
    ]


def test_comparison_table_ratios_are_relative_to_the_reference(evaluations) -> None:
    rows = _rows(comparison_table_markdown(evaluations, "teacher"))
    # model, form, macro-F1, accuracy, F1 retained, MB, size ratio, p50, p95,
    # latency ratio, throughput
    assert rows["student-onnx"] == [
        "student-onnx",
        "onnx-int8",
        "0.7760",
        "0.7860",
        "0.970",
        "5.00",
        "18.00x",
        "1.00",
        "1.50",
        "10.00x",
        "2000",
    ]
    assert rows["teacher"][4:7] == ["1.000", "90.00", "1.00x"]
    assert rows["teacher-int8"][6] == "3.00x"
    assert rows["baseline"][9] == "20.00x"


def test_comparison_table_needs_the_reference(evaluations) -> None:
    with pytest.raises(ValueError, match="missing"):
        comparison_table_markdown(evaluations, "missing")


def test_comparison_table_adds_columns_per_secondary_reference(evaluations) -> None:
    rows = _rows(comparison_table_markdown(evaluations, "teacher", ["teacher-int8"]))
    # student-onnx vs teacher-int8: 30 / 5 MB smaller, 6.0 / 1.0 ms faster.
    assert rows["student-onnx"][-2:] == ["6.00x", "6.00x"]


def test_find_evaluation_returns_the_named_one(evaluations) -> None:
    assert find_evaluation(evaluations, "student").form == "torch-fp32"
    with pytest.raises(ValueError, match="'nowhere' is not among"):
        find_evaluation(evaluations, "nowhere")


def test_markdown_table_escapes_pipes_and_flattens_line_breaks() -> None:
    table = markdown_table(["a", "b|c"], [["x\ny", "1"], ["z", "2"]])
    assert table.splitlines() == [
        "| a | b\\|c |",
        "| --- | --- |",
        "| x y | 1 |",
        "| z | 2 |",
    ]


@pytest.mark.parametrize(
    ("size_bytes", "expected"),
    [(4_200_000, "4.20"), (10_000, "0.01"), (5_100, "0.0051"), (123, "0.00012")],
)
def test_format_mb_keeps_two_significant_digits_below_a_hundredth(
    size_bytes: int, expected: str
) -> None:
    assert format_mb(size_bytes) == expected


def test_format_factor() -> None:
    assert format_factor(3) == "3.00x"
    assert format_factor(0.456) == "0.46x"
