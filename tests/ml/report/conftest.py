"""Hand-made evaluations shared by the table, card and figure tests."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from distillery.ml.report.model_evaluation import ModelEvaluation

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


@pytest.fixture
def build_evaluation() -> Callable[..., ModelEvaluation]:
    """``build_evaluation(name, family, form, macro_f1, size_bytes, p50, throughput)``."""
    return _evaluation
