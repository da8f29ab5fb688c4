"""The released student: chosen on validation behind the gates, tagged, carded."""

from __future__ import annotations

import json

import pytest

from distillery.ml.compress.distill import StudentRecipe
from distillery.ml.report.evaluation import GateError, ModelEvaluation
from distillery.ml.report.student_release import (
    release_tags,
    select_student_export,
    student_model_card,
)

GATES = {"min_f1_retained": 0.9, "min_size_ratio": 1.0, "min_latency_ratio": 0.1}
RECIPES = (StudentRecipe(name="L1", num_layers=1), StudentRecipe("L2", 2))


def _evaluation(
    name: str, form: str, f1: float, size: int, p50: float
) -> ModelEvaluation:
    return ModelEvaluation(
        name=name,
        family="teacher" if name.startswith("teacher") else "student",
        form=form,
        accuracy=f1,
        macro_f1=f1,
        per_class={},
        confusion=[[1, 0], [0, 1]],
        size_bytes=size,
        latency_p50_ms=p50,
        latency_p95_ms=p50,
        throughput_per_s=1.0,
        num_threads=1,
        n_test=2,
    )


EVALUATIONS = [
    _evaluation("teacher", "torch-fp32", 0.80, 1000, 20.0),
    _evaluation("teacher-onnx-fp32", "onnx-fp32", 0.80, 1000, 10.0),
    _evaluation("teacher-onnx-int8", "onnx-int8", 0.78, 400, 5.0),
    _evaluation("L1", "torch-fp32", 0.90, 200, 4.0),  # PyTorch students never ship
    _evaluation("L1-onnx-fp32", "onnx-fp32", 0.79, 200, 2.0),
    _evaluation("L1-onnx-int8", "onnx-int8", 0.70, 50, 1.0),
    _evaluation("L2-onnx-fp32", "onnx-fp32", 0.60, 300, 3.0),
]
# Validation says the opposite of test for L1: the choice must follow validation.
EXPORT_REPORT = {
    "L1": {"val_macro_f1": {"onnx-fp32": 0.70, "onnx-int8": 0.77}},
    "L2": {"val_macro_f1": {"onnx-fp32": 0.60}},
}


def test_the_choice_follows_validation_among_onnx_exports() -> None:
    chosen = select_student_export(EVALUATIONS, EXPORT_REPORT, 0.80, GATES, RECIPES)

    assert (chosen["name"], chosen["variant"], chosen["form"]) == (
        "L1-onnx-int8",
        "L1",
        "onnx-int8",
    )
    assert chosen["file"] == "L1.int8.onnx"
    assert chosen["reference"] == "teacher-onnx-fp32"
    assert chosen["val_macro_f1"] == 0.77 and chosen["teacher_val_macro_f1"] == 0.80
    assert chosen["ratios"]["f1_retained"] == pytest.approx(0.70 / 0.80)  # test
    assert chosen["ratios"]["latency_ratio"] == pytest.approx(10.0)
    assert chosen["gates"] is GATES
    assert chosen["recipe"]["name"] == "L1"
    assert chosen["evaluation"] == EVALUATIONS[5].to_dict()


def test_the_reference_can_be_another_teacher_form() -> None:
    gates = GATES | {"reference": "teacher-onnx-int8"}
    chosen = select_student_export(EVALUATIONS, EXPORT_REPORT, 0.80, gates, RECIPES)
    assert chosen["reference"] == "teacher-onnx-int8"
    assert chosen["ratios"]["size_ratio"] == pytest.approx(400 / 50)


def test_no_export_passing_the_gates_is_an_error() -> None:
    gates = GATES | {"min_size_ratio": 100.0}
    with pytest.raises(GateError, match="size_ratio"):
        select_student_export(EVALUATIONS, EXPORT_REPORT, 0.80, gates, RECIPES)


def test_release_tags_record_the_choice_and_its_data() -> None:
    chosen = {"variant": "L1", "form": "onnx-int8", "ratios": {"size_ratio": 20.0}}
    validation = {"sha256": "c0ffee", "profile": {"rows": 2}}
    teacher = {"data": {"profile": {"rows": 4}}}

    tags = release_tags(chosen, validation, teacher)

    assert tags["variant"] == "L1" and tags["form"] == "onnx-int8"
    assert tags["size_ratio"] == "20.0000"
    assert tags["corpus_sha256"] == "c0ffee"
    assert json.loads(tags["data_profile"]) == {"rows": 2}
    assert json.loads(tags["teacher_data_profile"]) == {"rows": 4}
    assert "teacher_data_profile" not in release_tags(chosen, validation, {})


def test_the_card_is_about_the_chosen_variant_and_tables_every_peer() -> None:
    chosen = select_student_export(EVALUATIONS, EXPORT_REPORT, 0.80, GATES, RECIPES)

    card = student_model_card(
        chosen,
        EVALUATIONS,
        {"path": "data/01_raw/tweets.csv", "sha256": "c0ffee", "rows": 8},
        {"counts": {"kept": 8}},
        {"run_id": "r1", "best_val_macro_f1": 0.80},
        {"name": "distillery-student", "version": "1", "alias": "challenger"},
    )

    lineage, peers = card.split("## Every form and peer")
    assert "L1-onnx-int8" in lineage and "c0ffee" in lineage
    assert "L2-onnx-fp32" not in lineage  # another variant: only in the peers table
    assert "L2-onnx-fp32" in peers and "teacher-onnx-int8" in peers
    assert "against `teacher-onnx-fp32`" in peers
    assert peers.endswith("![trade-off](model_tradeoff.png)\n")
