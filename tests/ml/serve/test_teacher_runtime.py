"""The teacher that computes the cached targets: PyTorch, or its graph in memory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distillery.ml.compress.distill import compute_logits, compute_logits_and_pooled
from distillery.ml.compress.forms import export_forms, read_onnx_files
from distillery.ml.data.text import tokenize_partition
from distillery.ml.models.artifact import ClassifierArtifact
from distillery.ml.models.modeling import TextClassifier, load_tokenizer
from distillery.ml.serve.inference import OnnxPredictor
from distillery.ml.serve.teacher_runtime import onnx_predictor, teacher_runtime

LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def teacher(tiny_teacher_dir: Path) -> ClassifierArtifact:
    model = TextClassifier.from_pretrained_encoder(str(tiny_teacher_dir), LABELS, 0.0)
    return ClassifierArtifact(model.eval(), load_tokenizer("builtin"))


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    texts = pd.DataFrame(
        {
            "text": ["awful late flight", "great crew"],
            "label": "x",
            "source_row": [0, 1],
        }
    )
    return tokenize_partition(texts, "builtin", 16, {"x": 0})


@pytest.fixture(scope="module")
def teacher_onnx(
    teacher: ClassifierArtifact, rows: pd.DataFrame, tmp_path_factory
) -> dict[str, bytes]:
    folder = tmp_path_factory.mktemp("teacher_onnx")
    export_forms("teacher", teacher, folder, 16, rows, 1e-4)
    return read_onnx_files(folder)


def test_pytorch_is_the_teacher_itself(teacher: ClassifierArtifact) -> None:
    with teacher_runtime("torch", teacher, {}, pooled=True) as model:
        assert model is teacher.model


def test_the_onnx_teacher_gives_pytorchs_logits_and_pooled_embeddings(
    teacher: ClassifierArtifact, rows: pd.DataFrame, teacher_onnx: dict[str, bytes]
) -> None:
    torch_logits, torch_pooled = compute_logits_and_pooled(teacher.model, rows)
    with teacher_runtime("onnx-fp32", teacher, teacher_onnx, pooled=True) as onnx:
        assert isinstance(onnx, OnnxPredictor)
        logits, pooled = compute_logits_and_pooled(onnx, rows)
    np.testing.assert_allclose(logits, torch_logits, atol=1e-4)
    np.testing.assert_allclose(pooled, torch_pooled, atol=1e-4)
    with teacher_runtime("onnx-int8", teacher, teacher_onnx, pooled=False) as onnx:
        assert compute_logits(onnx, rows).shape == (len(rows), len(LABELS))


def test_a_graph_in_memory_is_read_with_its_metadata(
    teacher: ClassifierArtifact, teacher_onnx: dict[str, bytes]
) -> None:
    graph = teacher_onnx["teacher.onnx"]
    with onnx_predictor(graph, "t.onnx", teacher.tokenizer, num_threads=1) as onnx:
        assert onnx.labels == LABELS
        assert onnx.predict_proba(["great crew"]).shape == (1, 2)
