"""Markdown tables of evaluations, and the cell formats the reports share.

Pure functions of :class:`ModelEvaluation`: they return markdown strings and write
nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distillery.ml.report.gates import ratios
from distillery.ml.report.model_evaluation import ModelEvaluation


def find_evaluation(
    evaluations: Sequence[ModelEvaluation], name: str
) -> ModelEvaluation:
    """The evaluation called ``name``.

    Args:
        evaluations: Where to look.
        name: The model name, e.g. the reference's.

    Returns:
        The first evaluation with that name.

    Raises:
        ValueError: If none is called ``name``.
    """
    for evaluation in evaluations:
        if evaluation.name == name:
            return evaluation
    raise ValueError(f"reference {name!r} is not among {[e.name for e in evaluations]}")


def _cell(value: Any) -> str:
    """A markdown table cell: pipes escaped, line breaks flattened."""
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table; pipes in cells are escaped and line breaks flattened.

    Args:
        header: Column titles.
        rows: One list of cells per row, as many as ``header``.

    Returns:
        Header line, separator line, one line per row (no trailing newline).
    """
    lines = [
        "| " + " | ".join(_cell(h) for h in header) + " |",
        "|" + "|".join(" --- " for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def format_mb(size_bytes: float) -> str:
    """Megabytes (10^6 bytes): two decimals, or two significant digits below 0.01.

    Args:
        size_bytes: A size in bytes.

    Returns:
        The number of megabytes, without unit, e.g. ``"4.20"`` or ``"0.0051"``.
    """
    mb = size_bytes / 1e6
    return f"{mb:.2f}" if mb >= 0.01 else f"{mb:.2g}"


def format_factor(value: float) -> str:
    """A ratio as a factor with two decimals, e.g. ``"3.00x"``.

    Args:
        value: The ratio.

    Returns:
        The factor.
    """
    return f"{value:.2f}x"


def comparison_table_markdown(
    evaluations: Sequence[ModelEvaluation],
    reference_name: str,
    secondary_names: Sequence[str] = (),
) -> str:
    """One markdown row per evaluation, in the order given.

    Columns: model, form, macro-F1, accuracy, F1 retained (candidate / reference
    macro-F1), size in MB (10^6 bytes), size ratio (reference / candidate), p50 and
    p95 latency at batch 1 in ms, latency ratio (reference / candidate p50) and
    throughput in texts per second at batch 32.

    Args:
        evaluations: The evaluations, reference included.
        reference_name: Name of the evaluation the ratios are relative to.
        secondary_names: Further references; each adds "smaller" and "faster"
            columns (reference / candidate size and p50 latency).

    Returns:
        The table (header, separator, one line per evaluation).

    Raises:
        ValueError: If no evaluation is called ``reference_name``.
    """
    reference = find_evaluation(evaluations, reference_name)
    secondary = [find_evaluation(evaluations, name) for name in secondary_names]
    header = [
        "model",
        "form",
        "macro-F1",
        "accuracy",
        "F1 retained",
        "size (MB)",
        "size ratio",
        "p50 (ms)",
        "p95 (ms)",
        "latency ratio",
        "throughput (/s)",
    ]
    for other in secondary:
        header += [f"smaller vs {other.name}", f"faster vs {other.name}"]
    rows = []
    for e in evaluations:
        r = ratios(e, reference)
        extra = []
        for other in secondary:
            o = ratios(e, other)
            extra += [format_factor(o["size_ratio"]), format_factor(o["latency_ratio"])]
        rows.append(
            [
                e.name,
                e.form,
                f"{e.macro_f1:.4f}",
                f"{e.accuracy:.4f}",
                f"{r['f1_retained']:.3f}",
                format_mb(e.size_bytes),
                format_factor(r["size_ratio"]),
                f"{e.latency_p50_ms:.2f}",
                f"{e.latency_p95_ms:.2f}",
                format_factor(r["latency_ratio"]),
                f"{e.throughput_per_s:.0f}",
                *extra,
            ]
        )
    return markdown_table(header, rows)
