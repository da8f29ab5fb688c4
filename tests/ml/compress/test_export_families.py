"""ONNX export, graph optimisation and int8 of teachers that are not BERT."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from distillery.ml.compress.export import (
    check_parity,
    export_onnx,
    optimize_onnx,
    quantize_onnx,
    read_metadata,
)
from distillery.ml.models.modeling import TextClassifier, load_tokenizer
from distillery.ml.serve.inference import OnnxPredictor

TEXTS = ["what a lovely flight", "rude", "the crew was late, my bag is lost again"]


# Decoders (last-token pooling) and encoders ONNX Runtime's transformer optimizer
# does not know get its offline graph optimization; BERT-like encoders its "bert"
# fusions. (Llama, XLM-R and ELECTRA take the paths of Mistral and RoBERTa; they
# passed too, at ~40 s each.)
@pytest.mark.parametrize(
    ("family", "optimizer"),
    [
        ("qwen2", "offline"),
        ("mistral", "offline"),
        ("gemma", "offline"),
        ("deberta-v2", "offline"),
        ("modernbert", "offline"),
        ("roberta", "bert"),
    ],
)
def test_a_family_exports_with_parity_and_quantizes(
    family: str,
    optimizer: str,
    tiny_family_dir: Callable[[str], Path],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = tiny_family_dir(family)
    tokenizer = load_tokenizer(str(folder))
    model = TextClassifier.from_pretrained_encoder(str(folder), ["a", "b"]).eval()
    raw = export_onnx(model, tmp_path / "raw.onnx", max_length=32)
    with caplog.at_level(logging.INFO, logger="distillery.ml.compress.export"):
        fp32 = optimize_onnx(raw, tmp_path / "m.onnx")
    offline = "has no transformer optimizer for model type" in caplog.text
    assert offline == (optimizer == "offline")
    assert read_metadata(fp32)["model_type"] == family

    batch = tokenizer(TEXTS, padding=True, return_tensors="np")
    assert check_parity(model, fp32, [dict(batch)]) <= 1e-4
    sizes = quantize_onnx(fp32, tmp_path / "m.int8.onnx", optimize=False)
    assert sizes["quantized_bytes"] < sizes["fp32_bytes"]
    # Served from the file alone, padded by the tokenizer's own pad token.
    predictor = OnnxPredictor(tmp_path / "m.onnx", tokenizer, num_threads=1)
    proba = predictor.predict_proba(TEXTS)
    assert proba.shape == (3, 2)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
