"""Comparison table, figures and model card built from hand-made evaluations."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from distillery.ml.report.evaluation import ModelEvaluation
from distillery.ml.report.reporting import (
    comparison_table_markdown,
    confusion_matrices_figure,
    model_card_markdown,
    pareto_frontier,
    tradeoff_figure,
)

LABELS = ["negative", "neutral", "positive"]


def _evaluation(  # noqa: PLR0917 - positional rows read as a table below
    name: str,
    family: str,
    form: str,
    macro_f1: float,
    size_bytes: int,
    p50: float,
    throughput: float,
) -> ModelEvaluation:
    f1 = {"negative": macro_f1 - 0.05, "neutral": macro_f1, "positive": macro_f1 + 0.05}
    return ModelEvaluation(
        name=name,
        family=family,
        form=form,
        accuracy=macro_f1 + 0.01,
        macro_f1=macro_f1,
        per_class={
            label: {"precision": v, "recall": v, "f1": v, "support": 10}
            for label, v in f1.items()
        },
        confusion=[[8, 1, 1], [1, 8, 1], [0, 2, 8]],
        size_bytes=size_bytes,
        latency_p50_ms=p50,
        latency_p95_ms=p50 * 1.5,
        throughput_per_s=throughput,
        num_threads=2,
        n_test=30,
        extra={"labels": LABELS},
    )


@pytest.fixture
def evaluations() -> list[ModelEvaluation]:
    return [
        _evaluation("baseline", "baseline", "sklearn", 0.60, 2_000_000, 0.5, 3000.0),
        _evaluation("teacher", "teacher", "torch-fp32", 0.80, 90_000_000, 10.0, 200.0),
        _evaluation(
            "teacher-int8", "teacher", "torch-int8", 0.79, 30_000_000, 6.0, 350
        ),
        _evaluation("student", "student", "torch-fp32", 0.78, 20_000_000, 2.5, 800.0),
        _evaluation("student-onnx", "student", "onnx-int8", 0.776, 5_000_000, 1.0, 2e3),
    ]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


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


def test_confusion_figure_has_one_annotated_heatmap_per_model(evaluations) -> None:
    fig = confusion_matrices_figure(evaluations, LABELS)
    assert len(fig.axes) == len(evaluations)  # 2x3 grid, the empty cell removed
    for ax, e in zip(fig.axes, evaluations, strict=True):
        counts = [int(t.get_text()) for t in ax.texts]
        assert counts == [c for row in e.confusion for c in row]
        assert e.name in ax.get_title()
        assert [t.get_text() for t in ax.get_yticklabels()] == LABELS


def test_confusion_figure_rejects_a_mismatched_label_list(evaluations) -> None:
    with pytest.raises(ValueError, match="expected 2x2"):
        confusion_matrices_figure(evaluations, LABELS[:2])


def test_tradeoff_figure_plots_f1_against_log_latency_with_the_frontier(
    evaluations,
) -> None:
    fig = tradeoff_figure(evaluations, "teacher")
    ax = fig.axes[0]
    assert (ax.get_xscale(), ax.get_yscale()) == ("log", "linear")
    assert [t.get_text().split(" (")[0] for t in ax.texts] == [
        e.name for e in evaluations
    ]
    points = [c.get_offsets()[0].tolist() for c in ax.collections]
    assert points[1] == pytest.approx([10.0, 0.80])  # teacher: ms, macro-F1
    (frontier,) = ax.get_lines()
    # baseline (0.5 ms) -> student-onnx (1.0) -> student (2.5) -> teacher-int8 (6.0)
    # -> teacher (10.0): each faster model is worse, so all five are on it.
    assert frontier.get_xdata().tolist() == [0.5, 1.0, 2.5, 6.0, 10.0]


def test_pareto_frontier_drops_what_another_beats_on_both_axes(evaluations) -> None:
    slow_and_worse = _evaluation("bad", "student", "torch-fp32", 0.7, 10**7, 3.0, 9.0)
    frontier = pareto_frontier([*evaluations, slow_and_worse])
    assert [e.name for e in frontier] == [
        "baseline",
        "student-onnx",
        "student",
        "teacher-int8",
        "teacher",
    ]


def test_comparison_table_adds_columns_per_secondary_reference(evaluations) -> None:
    rows = _rows(comparison_table_markdown(evaluations, "teacher", ["teacher-int8"]))
    # student-onnx vs teacher-int8: 30 / 5 MB smaller, 6.0 / 1.0 ms faster.
    assert rows["student-onnx"][-2:] == ["6.00x", "6.00x"]


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
