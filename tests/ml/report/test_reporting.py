"""Confusion-matrix and trade-off figures built from hand-made evaluations."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pytest

from distillery.ml.report.reporting import (
    confusion_matrices_figure,
    pareto_frontier,
    tradeoff_figure,
)

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


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


def test_pareto_frontier_drops_what_another_beats_on_both_axes(
    evaluations, build_evaluation
) -> None:
    slow_and_worse = build_evaluation(
        "bad", "student", "torch-fp32", 0.7, 10**7, 3.0, 9.0
    )
    frontier = pareto_frontier([*evaluations, slow_and_worse])
    assert [e.name for e in frontier] == [
        "baseline",
        "student-onnx",
        "student",
        "teacher-int8",
        "teacher",
    ]
