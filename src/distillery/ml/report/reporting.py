"""Comparison tables, figures and the model card built from :class:`ModelEvaluation`.

Pure functions of evaluations and lineage facts: they return markdown strings and
matplotlib figures (headless, Agg) and write nothing; the caller saves or logs them.
The figures live here; the tables in :mod:`distillery.ml.report.tables` and the
card in :mod:`distillery.ml.report.model_card`, both re-exported here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import (  # noqa: E402
    FuncFormatter,
    LogLocator,
    NullFormatter,
)

from distillery.ml.report.model_card import model_card_markdown  # noqa: E402
from distillery.ml.report.model_evaluation import ModelEvaluation  # noqa: E402
from distillery.ml.report.tables import (  # noqa: E402
    comparison_table_markdown,
    find_evaluation,
)

__all__ = [
    "comparison_table_markdown",
    "confusion_matrices_figure",
    "model_card_markdown",
    "pareto_frontier",
    "tradeoff_figure",
]

MAX_GRID_COLUMNS = 3  # confusion matrices per figure row


def confusion_matrices_figure(
    evaluations: Sequence[ModelEvaluation], labels: list[str]
) -> Figure:
    """A grid with one confusion-matrix heatmap per evaluation.

    Cells are coloured by the row share (recall per true label, so classes of
    different sizes read alike) and annotated with raw counts.

    Args:
        evaluations: The evaluations, in display order.
        labels: Label names, in the row/column order of every ``confusion``.

    Returns:
        The figure: exactly one axes per evaluation (unused grid cells removed).

    Raises:
        ValueError: If ``evaluations`` is empty or a matrix does not match ``labels``.
    """
    if not evaluations:
        raise ValueError("confusion_matrices_figure needs at least one evaluation")
    n_labels = len(labels)
    for e in evaluations:
        if np.shape(e.confusion) != (n_labels, n_labels):
            raise ValueError(
                f"{e.name}: confusion is {np.shape(e.confusion)}, expected "
                f"{n_labels}x{n_labels} for labels {labels}"
            )
    n_cols = min(MAX_GRID_COLUMNS, len(evaluations))
    n_rows = math.ceil(len(evaluations) / n_cols)
    side = 1.2 + 0.6 * n_labels
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(side * n_cols, side * n_rows), squeeze=False
    )
    flat = axes.ravel()
    for ax, e in zip(flat, evaluations, strict=False):
        counts = np.asarray(e.confusion, dtype=np.int64)  # (true, predicted)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(n_labels):
            for j in range(n_labels):
                ax.text(
                    j,
                    i,
                    str(counts[i, j]),
                    ha="center",
                    va="center",
                    color="white" if share[i, j] > 0.5 else "black",
                    fontsize=8,
                )
        ax.set_xticks(range(n_labels), labels, rotation=45, ha="right")
        ax.set_yticks(range(n_labels), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{e.name}\nmacro-F1 {e.macro_f1:.3f}", fontsize=9)
    for ax in flat[len(evaluations) :]:
        fig.delaxes(ax)
    fig.tight_layout()
    return fig


def pareto_frontier(evaluations: Sequence[ModelEvaluation]) -> list[ModelEvaluation]:
    """The evaluations no other beats on both macro-F1 and p50 latency, fastest first.

    Args:
        evaluations: Any evaluations.

    Returns:
        The frontier: each is faster than the next and has a lower macro-F1.
    """
    frontier: list[ModelEvaluation] = []
    for e in sorted(evaluations, key=lambda e: (e.latency_p50_ms, -e.macro_f1)):
        if not frontier or e.macro_f1 > frontier[-1].macro_f1:
            frontier.append(e)
    return frontier


_FAMILY_COLOURS = {"teacher": "tab:red", "baseline": "tab:gray", "student": "tab:blue"}


def tradeoff_figure(
    evaluations: Sequence[ModelEvaluation], reference_name: str
) -> Figure:
    """Macro-F1 against median batch-1 latency (log scale), with the Pareto frontier.

    Every form and peer is a point (colour: family, area: size on disk); the frontier
    joins the forms no other beats on both axes.

    Args:
        evaluations: The evaluations, reference included.
        reference_name: Drawn with a black edge and named in the title.

    Returns:
        The figure: one axes.

    Raises:
        ValueError: If no evaluation is called ``reference_name``.
    """
    reference = find_evaluation(evaluations, reference_name)
    fig, ax = plt.subplots(figsize=(8, 5))
    for e in evaluations:
        ax.scatter(
            e.latency_p50_ms,
            e.macro_f1,
            s=30 + 6 * math.sqrt(e.size_bytes / 1e6) * 10,
            color=_FAMILY_COLOURS.get(e.family, "tab:green"),
            edgecolors="black" if e is reference else "none",
            linewidths=1.5,
            alpha=0.8,
            zorder=3,
        )
        ax.annotate(
            f"{e.name} ({e.size_bytes / 1e6:.1f} MB)",
            (e.latency_p50_ms, e.macro_f1),
            xytext=(6, 4),
            textcoords="offset points",
            fontsize=7,
        )
    frontier = pareto_frontier(evaluations)
    ax.step(
        [e.latency_p50_ms for e in frontier],
        [e.macro_f1 for e in frontier],
        where="post",
        color="black",
        linestyle="--",
        linewidth=1,
        label="Pareto frontier",
        zorder=2,
    )
    ax.set_xscale("log")
    ax.margins(x=0.2, y=0.1)
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("p50 latency at batch 1, 1 thread, tokenisation included (ms, log)")
    ax.set_ylabel("test macro-F1")
    ax.set_title(f"Quality vs latency (reference: {reference.name}; area: size)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig
