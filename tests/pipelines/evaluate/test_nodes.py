"""evaluate_models: one code path measures every model form; the report lists them all."""

from pathlib import Path

import pandas as pd
import pytest

from distillery.ml.data.text import tokenize_partition
from distillery.ml.models.artifact import ClassifierArtifact
from distillery.ml.models.modeling import TextClassifier, load_tokenizer
from distillery.pipelines.compress.nodes import export_students, export_teacher
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
    compress = {
        "students": [{"name": "S", "num_layers": 1}],
        "distill": {"max_length": 32},
        "workdir": str(tmp_path),
        "gates": {},
        "registry": {},
    }
    onnx, report = export_students(students, _frame(2), compress)
    teacher_onnx, teacher_report = export_teacher(teacher, _frame(2), compress)
    baseline, search = fit_baseline_model(_frame(10), _frame(3), VOCAB, OPTIONS)

    records = evaluate_models(
        baseline, teacher, teacher_onnx, students, onnx, _frame(5), VOCAB, OPTIONS
    )

    assert [(r["name"], r["form"]) for r in records] == [
        ("teacher", "torch-fp32"),
        ("teacher-onnx-fp32", "onnx-fp32"),
        ("teacher-onnx-int8", "onnx-int8"),
        ("baseline", "sklearn"),
        ("S-onnx-fp32", "onnx-fp32"),
        ("S-onnx-int8", "onnx-int8"),
    ]
    assert len(search) == 3  # the default grid: one n-gram pair, three values of C
    assert {r["n_test"] for r in records} == {10}
    assert {r["num_threads"] for r in records} == {1}
    by_name = {r["name"]: r for r in records}
    # The same weights give the same predictions in PyTorch and ONNX fp32.
    assert by_name["teacher"]["confusion"] == by_name["S-onnx-fp32"]["confusion"]
    assert by_name["teacher"]["confusion"] == by_name["teacher-onnx-fp32"]["confusion"]
    # Deployable sizes include the tokenizer files on every side.
    tokenizer_bytes = by_name["teacher-onnx-fp32"]["size_bytes"] - len(
        teacher_onnx["teacher.onnx"]
    )
    assert tokenizer_bytes > 100_000
    assert by_name["S-onnx-int8"]["size_bytes"] == (
        len(onnx["S.int8.onnx"]) + tokenizer_bytes
    )
    assert report["S"]["val_rows"] == 4 and teacher_report["teacher"]["val_rows"] == 4

    table, markdown, confusion, tradeoff, metrics = report_models(records, VOCAB)
    assert table["reference"] == "teacher-onnx-fp32"
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
