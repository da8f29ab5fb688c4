"""Ratios against a reference, release gates and model selection."""

from __future__ import annotations

import pytest

from distillery.ml.report.gates import (
    GateError,
    Gates,
    check_gates,
    ratios,
    select_best,
)
from distillery.ml.report.model_evaluation import ModelEvaluation


def make_evaluation(
    name: str,
    *,
    macro_f1: float,
    size_bytes: int,
    p50: float,
    throughput: float = 100.0,
    n_test: int = 10,
    form: str = "onnx-int8",
) -> ModelEvaluation:
    """A hand-made evaluation; only the gate-relevant numbers matter."""
    return ModelEvaluation(
        name=name,
        family="student",
        form=form,
        accuracy=macro_f1,
        macro_f1=macro_f1,
        per_class={},
        confusion=[[5, 0], [0, 5]],
        size_bytes=size_bytes,
        latency_p50_ms=p50,
        latency_p95_ms=p50 * 1.5,
        throughput_per_s=throughput,
        num_threads=1,
        n_test=n_test,
    )


@pytest.fixture
def teacher() -> ModelEvaluation:
    return make_evaluation(
        "teacher", macro_f1=0.80, size_bytes=90_000_000, p50=10.0, form="torch-fp32"
    )


GATES = Gates(min_f1_retained=0.97, min_size_ratio=4.0, min_latency_ratio=2.0)


def test_ratios(teacher: ModelEvaluation) -> None:
    student = make_evaluation(
        "s", macro_f1=0.78, size_bytes=15_000_000, p50=2.5, throughput=450.0
    )
    assert ratios(student, teacher) == pytest.approx(
        {
            "f1_retained": 0.975,
            "size_ratio": 6.0,
            "latency_ratio": 4.0,
            "throughput_ratio": 4.5,
        }
    )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"macro_f1": 0.7696, "size_bytes": 10_000_000, "p50": 2.0},
            ["f1_retained 0.962 < 0.970"],
        ),
        (
            {"macro_f1": 0.79, "size_bytes": 30_000_000, "p50": 2.0},
            ["size_ratio 3.00 < 4.00"],
        ),
        (
            {"macro_f1": 0.79, "size_bytes": 10_000_000, "p50": 8.0},
            ["latency_ratio 1.25 < 2.00"],
        ),
        (
            {"macro_f1": 0.70, "size_bytes": 45_000_000, "p50": 20.0},
            [
                "f1_retained 0.875 < 0.970",
                "size_ratio 2.00 < 4.00",
                "latency_ratio 0.50 < 2.00",
            ],
        ),
        ({"macro_f1": 0.79, "size_bytes": 10_000_000, "p50": 2.0}, []),
    ],
)
def test_check_gates_names_each_missed_gate(
    teacher: ModelEvaluation, kwargs, expected
) -> None:
    assert check_gates(make_evaluation("c", **kwargs), teacher, GATES) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_f1_retained": 0.0},
        {"min_f1_retained": 1.2},
        {"min_size_ratio": -1.0},
        {"min_latency_ratio": float("inf")},
        {"min_size_ratio": "4"},
    ],
)
def test_gates_validate_themselves(kwargs) -> None:
    with pytest.raises(ValueError, match="Gates"):
        Gates(**kwargs)


def test_select_best_picks_the_passing_candidate_with_the_best_f1(
    teacher: ModelEvaluation,
) -> None:
    candidates = [
        make_evaluation("ok", macro_f1=0.785, size_bytes=10_000_000, p50=2.0),
        make_evaluation("best", macro_f1=0.790, size_bytes=20_000_000, p50=4.0),
        # Higher F1 but too slow: must not win.
        make_evaluation("slow", macro_f1=0.800, size_bytes=10_000_000, p50=9.0),
    ]
    assert (
        select_best(candidates, teacher, GATES, *_validation(candidates, teacher)).name
        == "best"
    )


def test_select_best_breaks_ties_by_size(teacher: ModelEvaluation) -> None:
    candidates = [
        make_evaluation("big", macro_f1=0.79, size_bytes=20_000_000, p50=2.0),
        make_evaluation("small", macro_f1=0.79, size_bytes=12_000_000, p50=3.0),
        make_evaluation("bigger", macro_f1=0.79, size_bytes=22_000_000, p50=1.0),
    ]
    assert (
        select_best(candidates, teacher, GATES, *_validation(candidates, teacher)).name
        == "small"
    )


def test_select_best_raises_a_table_of_every_candidate(
    teacher: ModelEvaluation,
) -> None:
    candidates = [
        make_evaluation("weak", macro_f1=0.7696, size_bytes=10_000_000, p50=2.0),
        make_evaluation("fat", macro_f1=0.792, size_bytes=30_000_000, p50=2.0),
        make_evaluation("slow", macro_f1=0.79, size_bytes=10_000_000, p50=8.0),
    ]
    with pytest.raises(GateError) as info:
        select_best(candidates, teacher, GATES, *_validation(candidates, teacher))

    assert isinstance(info.value, RuntimeError)
    lines = str(info.value).splitlines()
    assert "f1_retained" in lines[1] and "missed" in lines[1]
    rows = {line.split()[0]: line for line in lines[3:]}
    assert set(rows) == {"weak", "fat", "slow"}
    assert "f1_retained 0.962 < 0.970" in rows["weak"]
    assert "size_ratio 3.00 < 4.00" in rows["fat"]
    assert "latency_ratio 1.25 < 2.00" in rows["slow"]
    # Each row shows the candidate's three ratios.
    assert rows["fat"].split()[2:5] == ["0.990", "3.00", "5.00"]
    assert info.value.missed["slow"] == ["latency_ratio 1.25 < 2.00"]


def test_select_best_needs_candidates(teacher: ModelEvaluation) -> None:
    with pytest.raises(ValueError, match="at least one"):
        select_best([], teacher, GATES, {}, teacher.macro_f1)


def test_select_best_never_ranks_on_test_scores(teacher: ModelEvaluation) -> None:
    candidates = [make_evaluation("ok", macro_f1=0.785, size_bytes=10_000_000, p50=2.0)]
    with pytest.raises(ValueError, match="never falls back to test"):
        select_best(candidates, teacher, GATES, None, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no validation macro-F1 for candidate ok"):
        select_best(candidates, teacher, GATES, {"other": 0.8}, 0.8)


def _validation(
    candidates: list[ModelEvaluation], teacher: ModelEvaluation
) -> tuple[dict[str, float], float]:
    """Validation scores equal to the test ones, so the expectations above hold."""
    return {c.name: c.macro_f1 for c in candidates}, teacher.macro_f1
