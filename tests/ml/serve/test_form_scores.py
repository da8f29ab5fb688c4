"""A classifier's ONNX forms, exported and scored on validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from distillery.ml.compress.distill import compute_logits
from distillery.ml.data.text import tokenize_partition
from distillery.ml.metrics import classification_metrics
from distillery.ml.models.artifact import ClassifierArtifact
from distillery.ml.models.modeling import TextClassifier, load_tokenizer
from distillery.ml.serve.form_scores import export_scored_forms

LABELS = ["negative", "positive"]
TEXTS = ["awful late flight", "great kind crew", "rude", "smooth thanks a lot"]


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir: Path) -> ClassifierArtifact:
    model = TextClassifier.from_pretrained_encoder(str(tiny_teacher_dir), LABELS, 0.0)
    return ClassifierArtifact(model.eval(), load_tokenizer("builtin"))


@pytest.fixture(scope="module")
def validation() -> pd.DataFrame:
    rows = pd.DataFrame(
        {
            "text": TEXTS * 2,
            "label": ["negative", "positive"] * 4,
            "source_row": range(8),
        }
    )
    return tokenize_partition(rows, "builtin", 16, {"negative": 0, "positive": 1})


@pytest.fixture(scope="module")
def exported(
    teacher: ClassifierArtifact, validation: pd.DataFrame
) -> tuple[dict[str, bytes], dict[str, Any]]:
    return export_scored_forms("teacher", teacher, 16, validation, 1e-4)


def test_forms_are_scored_on_every_validation_row(
    teacher: ClassifierArtifact,
    validation: pd.DataFrame,
    exported: tuple[dict[str, bytes], dict[str, Any]],
) -> None:
    files, report = exported
    assert set(files) == {"teacher.onnx", "teacher.int8.onnx"}
    assert list(report)[:4] == [
        "parity_max_abs_diff",
        "int8_agreement",
        "val_rows",
        "val_macro_f1",
    ]
    assert report["parity_max_abs_diff"] <= 1e-4
    assert report["val_rows"] == len(validation)
    assert 0.0 <= report["int8_agreement"] <= 1.0
    # fp32 agrees with PyTorch, so it scores what PyTorch scores.
    torch_pred = compute_logits(teacher.model, validation).argmax(1)
    expected = classification_metrics(validation["label"], torch_pred, LABELS)
    assert report["val_macro_f1"]["onnx-fp32"] == pytest.approx(expected["macro_f1"])
    assert set(report["val_macro_f1"]) == {"onnx-fp32", "onnx-int8"}


def test_an_export_out_of_tolerance_is_never_scored(
    teacher: ClassifierArtifact, validation: pd.DataFrame
) -> None:
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export_scored_forms("teacher", teacher, 16, validation, -1.0)
