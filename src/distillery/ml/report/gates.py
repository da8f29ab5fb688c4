"""Release gates and model selection: candidates against a reference.

:func:`check_gates` and :func:`select_best` compare candidates with a reference
(usually the fp32 teacher) on retained macro-F1, size and latency.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass

from distillery.ml.report.model_evaluation import ModelEvaluation

logger = logging.getLogger(__name__)


class GateError(RuntimeError):
    """No candidate passed the release gates; the message tabulates why.

    Attributes:
        missed: Candidate name -> the gates it missed (as :func:`check_gates`
            words them).
    """

    def __init__(self, message: str, missed: dict[str, list[str]]) -> None:
        super().__init__(message)
        self.missed = missed


def ratios(
    candidate: ModelEvaluation,
    reference: ModelEvaluation,
    *,
    f1: float | None = None,
    reference_f1: float | None = None,
) -> dict[str, float]:
    """How a candidate compares with a reference; above 1 favours the candidate.

    Args:
        candidate: The compressed model.
        reference: What it replaces (usually the fp32 teacher).
        f1: The candidate's macro-F1 to use instead of its (test) evaluation's, e.g.
            its validation score when choosing.
        reference_f1: Likewise for the reference.

    Returns:
        ``f1_retained`` (candidate / reference macro-F1), ``size_ratio`` (reference
        / candidate size), ``latency_ratio`` (reference / candidate p50) and
        ``throughput_ratio`` (candidate / reference throughput).

    Raises:
        ValueError: If the reference's macro-F1 is 0.
    """
    f1 = candidate.macro_f1 if f1 is None else f1
    reference_f1 = reference.macro_f1 if reference_f1 is None else reference_f1
    if reference_f1 <= 0:
        raise ValueError(f"reference {reference.name} has macro-F1 0; nothing to keep")
    return {
        "f1_retained": f1 / reference_f1,
        "size_ratio": reference.size_bytes / candidate.size_bytes,
        "latency_ratio": reference.latency_p50_ms / candidate.latency_p50_ms,
        "throughput_ratio": candidate.throughput_per_s / reference.throughput_per_s,
    }


@dataclass(frozen=True)
class Gates:
    """Release gates a candidate must pass against the reference.

    Attributes:
        min_f1_retained: Lowest acceptable candidate / reference macro-F1.
        min_size_ratio: Lowest acceptable reference / candidate size.
        min_latency_ratio: Lowest acceptable reference / candidate p50 latency.

    Raises:
        ValueError: If a threshold is not a positive finite number, or
            ``min_f1_retained`` exceeds 1.
    """

    min_f1_retained: float = 0.97
    min_size_ratio: float = 4.0
    min_latency_ratio: float = 2.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"Gates.{f.name} must be a number, got {value!r}")
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"Gates.{f.name} must be > 0 and finite, got {value}")
        if self.min_f1_retained > 1:
            raise ValueError(
                f"Gates.min_f1_retained must be <= 1, got {self.min_f1_retained}"
            )


_GATE_CHECKS = (  # (ratio key, Gates attribute, digits shown)
    ("f1_retained", "min_f1_retained", 3),
    ("size_ratio", "min_size_ratio", 2),
    ("latency_ratio", "min_latency_ratio", 2),
)


def check_gates(
    candidate: ModelEvaluation,
    reference: ModelEvaluation,
    gates: Gates,
    **f1s: float | None,
) -> list[str]:
    """The gates a candidate misses, each with its numbers.

    Args:
        candidate: The compressed model.
        reference: What it replaces.
        gates: The thresholds.
        **f1s: ``f1`` and ``reference_f1`` overrides, as :func:`ratios` takes them.

    Returns:
        One entry per missed gate, e.g. ``"f1_retained 0.962 < 0.970"``; empty if
        the candidate passes.
    """
    values = ratios(candidate, reference, **f1s)
    missed = []
    for key, attribute, digits in _GATE_CHECKS:
        threshold = getattr(gates, attribute)
        if values[key] < threshold:
            missed.append(f"{key} {values[key]:.{digits}f} < {threshold:.{digits}f}")
    return missed


def _plain_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain-text table with left-aligned columns, for exception messages."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [header, ["-" * w for w in widths], *rows]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )


def select_best(
    candidates: list[ModelEvaluation],
    reference: ModelEvaluation,
    gates: Gates,
    val_f1: Mapping[str, float],
    reference_val_f1: float,
) -> ModelEvaluation:
    """The passing candidate with the highest validation macro-F1 (ties: the smaller).

    The choice and the F1 gate use validation scores only; the evaluations' test
    scores are reported, never chosen on.

    Args:
        candidates: Evaluations to choose from.
        reference: What the chosen model replaces.
        gates: The thresholds.
        val_f1: Validation macro-F1 by candidate name.
        reference_val_f1: The reference's validation macro-F1.

    Returns:
        The chosen candidate.

    Raises:
        ValueError: If ``candidates`` is empty, or a validation score is missing
            (there is no fallback to test scores).
        GateError: If no candidate passes; the message has one row per candidate
            with its ratios and missed gates.
    """
    if not candidates:
        raise ValueError("select_best needs at least one candidate")
    if val_f1 is None or reference_val_f1 is None:
        raise ValueError(
            "select_best chooses on validation macro-F1: give val_f1 and "
            "reference_val_f1 (it never falls back to test scores)"
        )

    def f1s(c: ModelEvaluation) -> dict[str, float]:
        if c.name not in val_f1:
            raise ValueError(f"no validation macro-F1 for candidate {c.name}")
        return {"f1": val_f1[c.name], "reference_f1": reference_val_f1}

    def score(c: ModelEvaluation) -> float:
        return val_f1[c.name]

    missed = {c.name: check_gates(c, reference, gates, **f1s(c)) for c in candidates}
    passing = [c for c in candidates if not missed[c.name]]
    if passing:
        best = max(passing, key=lambda c: (score(c), -c.size_bytes))
        logger.info(
            "Selected %s (%s): %s macro-F1 %.4f, %s",
            best.name,
            best.form,
            "validation",
            score(best),
            {k: round(v, 3) for k, v in ratios(best, reference, **f1s(best)).items()},
        )
        return best
    rows = []
    for c in candidates:
        values = ratios(c, reference, **f1s(c))
        rows.append(
            [
                c.name,
                c.form,
                f"{values['f1_retained']:.3f}",
                f"{values['size_ratio']:.2f}",
                f"{values['latency_ratio']:.2f}",
                "; ".join(missed[c.name]),
            ]
        )
    header = ["model", "form", "f1_retained", "size_ratio", "latency_ratio", "missed"]
    message = (
        f"no candidate passed the gates against {reference.name!r} "
        f"(min f1_retained {gates.min_f1_retained:.3f}, min size_ratio "
        f"{gates.min_size_ratio:.2f}, min latency_ratio "
        f"{gates.min_latency_ratio:.2f}):\n{_plain_table(header, rows)}"
    )
    raise GateError(message, missed)
