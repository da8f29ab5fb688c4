"""evaluate_models: one code path measures every model form; the report lists them all."""

from pathlib import Path

import pandas as pd
import pytest

from distillery.ml.artifact import ClassifierArtifact
from distillery.ml.modeling import TextClassifier, load_tokenizer
from distillery.ml.text import tokenize_partition
from distillery.pipelines.compress.nodes import export_students
from distillery.pipelines.evaluate.nodes import (
    EvaluateOptions,
    evaluate_models,
    fit_baseline_model,
    report_models,
)

LABELS = ["negative", "positive"]
VOCAB = {"labels": LABELS}
OPTIONS = {
    "num_threads": 1,
    "latency_repeats": 3,
    "warmup": 1,
    "throughput_batches": 1,
    "max_length": 32,
}


def _frame(n: int) -> pd.DataFrame:
    texts = [("awful late flight", 0), ("great kind crew", 1)] * n
    frame = pd.DataFrame(
        {
            "text": [f"{t} {i}" for i, (t, _) in enumerate(texts)],
            "label": [LABELS[y] for _, y in texts],
        }
    ).assign(source_row=range(len(texts)))
    return tokenize_partition(frame, "builtin", 32, {"negative": 0, "positive": 1})


def test_every_form_is_measured_the_same_way(
    tiny_teacher_dir: Path, tmp_path: Path
) -> None:
    tokenizer = load_tokenizer("builtin")
    teacher = ClassifierArtifact(
        TextClassifier.from_pretrained_encoder(
            str(tiny_teacher_dir), LABELS, 0.0
        ).eval(),
        tokenizer,
    )
    students = {"S": teacher}  # the tiny teacher stands in for a student
    onnx, _ = export_students(
        students,
        _frame(2),
        {
            "students": [{"name": "S", "num_layers": 1}],
            "distill": {"max_length": 32},
            "workdir": str(tmp_path),
            "gates": {},
            "registry": {},
        },
    )
    baseline = fit_baseline_model(_frame(10), VOCAB, OPTIONS)

    records = evaluate_models(
        baseline, teacher, students, onnx, _frame(5), VOCAB, OPTIONS
    )

    assert [(r["name"], r["form"]) for r in records] == [
        ("teacher", "torch-fp32"),
        ("teacher-int8", "torch-int8"),
        ("baseline", "sklearn"),
        ("S", "torch-fp32"),
        ("S-int8", "torch-int8"),
        ("S-onnx-fp32", "onnx-fp32"),
        ("S-onnx-int8", "onnx-int8"),
    ]
    assert {r["n_test"] for r in records} == {10}
    assert {r["num_threads"] for r in records} == {1}
    by_name = {r["name"]: r for r in records}
    # The same weights give the same predictions in PyTorch and ONNX fp32.
    assert by_name["S"]["confusion"] == by_name["S-onnx-fp32"]["confusion"]
    assert by_name["teacher"]["size_bytes"] > by_name["S-onnx-int8"]["size_bytes"]

    table, markdown, confusion, tradeoff, metrics = report_models(records, VOCAB)
    assert table["reference"] == "teacher"
    assert all(r["name"] in markdown for r in records)
    assert len(confusion.axes) >= len(records)
    assert (
        metrics["S-onnx-int8.macro_f1"]["value"] == by_name["S-onnx-int8"]["macro_f1"]
    )


def test_evaluate_options_are_checked() -> None:
    with pytest.raises(ValueError, match="unknown evaluate_options"):
        EvaluateOptions.from_params({"threads": 2})
    with pytest.raises(ValueError, match="num_threads"):
        EvaluateOptions(num_threads=0)
