"""Model card built from hand-made evaluations."""

from __future__ import annotations

import pytest

from distillery.ml.report.model_card import model_card_markdown


def _rows(table: str) -> dict[str, list[str]]:
    """Table body keyed by model name, cells stripped."""
    rows = {}
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows[cells[0]] = cells
    return rows


def _card(evaluations, registry=None) -> str:
    return model_card_markdown(
        corpus={
            "path": "data/01_raw/raw_corpus.parquet",
            "sha256": "ab12" * 16,
            "rows": 38000,
            "language": "English",
            "domain": "tweets",
        },
        validation={"rows_in": 38000, "clean": 33066, "undecodable_text": 4934},
        teacher={
            "run_id": "run-7f3e9c",
            "model_path": "data/06_models/teacher",
            "config": {"epochs": 3, "learning_rate": 5e-5},
            "val_macro_f1": 0.81,
            "test_macro_f1": 0.80,
        },
        student={
            "config": {"num_layers": 2, "max_length": 64},
            "form": "onnx-int8",
            "name": "student-onnx",
        },
        evaluations=evaluations,
        reference_name="teacher",
        gates={"min_f1_retained": 0.97, "min_size_ratio": 4.0},
        registry=registry,
    )


def test_model_card_records_lineage_and_every_form(evaluations) -> None:
    card = _card(evaluations)
    assert "ab12" * 16 in card
    assert "run-7f3e9c" in card
    assert "undecodable_text: 4934" in card
    for e in evaluations:
        assert e.form in card and e.name in card
    assert card.startswith("# Model card: student-onnx")
    assert "English tweets" in card
    assert "negative, neutral, positive" in card
    assert "truncated" in card and "64 tokens" in card
    assert "not registered" in card


def test_model_card_walks_the_steps_with_deltas(evaluations) -> None:
    card = _card(evaluations, registry={"name": "distillery", "version": 3})
    section = card.split("## What each step cost and saved")[1].split("###")[0]
    table = "\n".join(line for line in section.splitlines() if "|" in line)
    rows = {cells[1]: cells for cells in _rows(table).values()}
    # The baseline is not a step of the walk; the four neural forms are, in order.
    assert [cells[0] for cells in rows.values()] == ["1", "2", "3", "4"]
    assert list(rows) == ["teacher", "teacher-int8", "student", "student-onnx"]
    # ΔF1, smaller and faster vs the previous step.
    assert rows["teacher-int8"][4:9] == ["-0.0100", "30.00", "3.00x", "6.00", "1.67x"]
    assert rows["student-onnx"][6] == "4.00x"
    assert rows["teacher"][4] == "—"
    assert "Baseline baseline (sklearn)" in card
    assert "- version: 3" in card


def test_model_card_needs_the_chosen_model(evaluations) -> None:
    with pytest.raises(ValueError, match="nowhere"):
        model_card_markdown(
            corpus={},
            validation={},
            teacher={},
            student={"name": "nowhere"},
            evaluations=evaluations,
            reference_name="teacher",
            gates={},
            registry=None,
        )
