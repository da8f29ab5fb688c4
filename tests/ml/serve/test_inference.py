"""Predictors (torch, ONNX) share tokenization and agree; latency helpers' contracts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from distillery.ml.compress.export import export_onnx
from distillery.ml.compress.quantize import quantize_dynamic_int8
from distillery.ml.compress.vocab import prune_vocabulary
from distillery.ml.models.modeling import TextClassifier, load_tokenizer
from distillery.ml.serve.inference import (
    OnnxPredictor,
    Predictor,
    TextEncoder,
    TorchPredictor,
    predict_labels,
)
from distillery.ml.serve.latency import (
    artifact_size_bytes,
    measure_latency,
    measure_throughput,
)

LABELS = ["a", "b", "c"]
TEXTS = [
    "w5 w6 w7",
    "w10 w11 w12 w13 w14 w15 w16 w17 w18 w19 w20 w21",
    "W30 unknownword w31",
    "w40",
    "w50 w51 w52 w53 w54",
    "w60 w61 w62 w63 w64 w65 w66 w67 w68 w69 w70 w71 w72 w73 w74 w75 w76 w77 w78",
    "w80 w81",
]


def make_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer over ``w5``..``w99`` with BERT's special tokens."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {tok: i for i, tok in enumerate(specials)} | {
        f"w{i}": i for i in range(5, 100)
    }
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


@pytest.fixture(scope="module")
def tokenizer() -> PreTrainedTokenizerFast:
    return make_tiny_tokenizer()


@pytest.fixture(scope="module")
def model(tiny_classifier: Callable[..., TextClassifier]) -> TextClassifier:
    base = tiny_classifier(LABELS)
    with torch.no_grad():
        base.head.weight.mul_(30)  # spread the logits so argmax is stable
    return prune_vocabulary(base, list(range(90)), unk_id=1)


@pytest.fixture(scope="module")
def onnx_path(model: TextClassifier, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "m.onnx", max_length=16)


def test_text_encoder_matches_the_transformers_call(tokenizer) -> None:
    encoder = TextEncoder(tokenizer, max_length=8)
    got = encoder(TEXTS)
    expected = tokenizer(
        TEXTS, truncation=True, max_length=8, padding=True, return_tensors="np"
    )
    np.testing.assert_array_equal(got["input_ids"], expected["input_ids"])
    np.testing.assert_array_equal(got["attention_mask"], expected["attention_mask"])
    assert got["input_ids"].dtype == np.int64
    assert encoder.lengths(TEXTS) == expected["attention_mask"].sum(axis=1).tolist()


def test_text_encoder_matches_the_teacher_tokenizer_on_real_text() -> None:
    teacher_tokenizer = load_tokenizer("builtin")
    texts = [
        "I just don't trust my life in google's hands #driverless",
        "ok",
        "x " * 300,
    ]
    got = TextEncoder(teacher_tokenizer, max_length=128)(texts)
    expected = teacher_tokenizer(texts, truncation=True, max_length=128, padding=True)
    assert got["input_ids"].tolist() == expected["input_ids"]
    assert got["input_ids"].shape == (3, 128)


def test_text_encoder_accepts_a_raw_backend_and_does_not_mutate_it(tokenizer) -> None:
    backend = tokenizer.backend_tokenizer
    before = (backend.truncation, backend.padding)
    TextEncoder(backend, max_length=4)(TEXTS)
    assert (backend.truncation, backend.padding) == before


def test_text_encoder_rejects_slow_tokenizers_and_tiny_lengths(tokenizer) -> None:
    with pytest.raises(TypeError, match="fast tokenizer"):
        TextEncoder(object(), max_length=8)
    with pytest.raises(ValueError, match="max_length"):
        TextEncoder(tokenizer, max_length=1)


def test_torch_and_onnx_predictors_agree(model, tokenizer, onnx_path: Path) -> None:
    torch_pred = TorchPredictor(model, tokenizer, max_length=16, num_threads=1)
    onnx_pred = OnnxPredictor(onnx_path, tokenizer, num_threads=1)
    assert isinstance(torch_pred, Predictor) and isinstance(onnx_pred, Predictor)
    assert onnx_pred.labels == torch_pred.labels == LABELS  # read from metadata
    p_torch = torch_pred.predict_proba(TEXTS)
    p_onnx = onnx_pred.predict_proba(TEXTS)
    assert p_torch.shape == p_onnx.shape == (len(TEXTS), 3)
    np.testing.assert_allclose(p_torch.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(p_onnx, p_torch, atol=1e-5)
    assert predict_labels(onnx_pred, TEXTS) == predict_labels(torch_pred, TEXTS)


def test_batching_and_length_sorting_keep_the_text_order(model, tokenizer) -> None:
    one_batch = TorchPredictor(model, tokenizer, max_length=16, batch_size=64)
    tiny_batches = TorchPredictor(model, tokenizer, max_length=16, batch_size=2)
    singles = np.concatenate([one_batch.predict_proba([t]) for t in TEXTS])
    np.testing.assert_allclose(tiny_batches.predict_proba(TEXTS), singles, atol=1e-5)
    np.testing.assert_allclose(one_batch.predict_proba(TEXTS), singles, atol=1e-5)


def test_normalize_is_applied_before_tokenization(model, tokenizer, onnx_path) -> None:
    raw = ["  W5   W6 ", "w7\tw8"]
    clean = ["w5 w6", "w7 w8"]
    normalize = lambda text: " ".join(text.lower().split())  # noqa: E731
    pred = OnnxPredictor(onnx_path, tokenizer, normalize=normalize)
    plain = OnnxPredictor(onnx_path, tokenizer)
    np.testing.assert_array_equal(pred.predict_proba(raw), plain.predict_proba(clean))


def test_empty_input_gives_an_empty_matrix(model, tokenizer, onnx_path) -> None:
    for pred in (TorchPredictor(model, tokenizer), OnnxPredictor(onnx_path, tokenizer)):
        assert pred.predict_proba([]).shape == (0, 3)


def test_explicit_labels_override_metadata(onnx_path: Path, tokenizer) -> None:
    pred = OnnxPredictor(onnx_path, tokenizer, labels=["x", "y", "z"], max_length=8)
    assert pred.labels == ["x", "y", "z"]
    assert pred.encoder.max_length == 8


def test_quantized_torch_model_serves_through_the_same_predictor(
    model, tokenizer
) -> None:
    fp32 = TorchPredictor(model, tokenizer, max_length=16).predict_proba(TEXTS)
    int8 = TorchPredictor(quantize_dynamic_int8(model), tokenizer, max_length=16)
    proba = int8.predict_proba(TEXTS)
    assert proba.shape == fp32.shape
    assert np.abs(proba - fp32).max() < 0.2


def test_latency_and_throughput_report_their_fields(onnx_path, tokenizer) -> None:
    pred = OnnxPredictor(onnx_path, tokenizer)
    result = measure_latency(pred, TEXTS, batch_size=2, warmup=2, repeats=10)
    assert set(result) == {"p50_ms", "p95_ms", "mean_ms", "batch_size"}
    assert 0 < result["p50_ms"] <= result["p95_ms"]
    assert result["batch_size"] == 2
    assert measure_throughput(pred, TEXTS * 3, batch_size=4) > 0


def test_latency_rejects_empty_texts(onnx_path, tokenizer) -> None:
    pred = OnnxPredictor(onnx_path, tokenizer)
    with pytest.raises(ValueError, match="at least one text"):
        measure_latency(pred, [])
    with pytest.raises(ValueError, match="batch_size"):
        measure_throughput(pred, TEXTS, batch_size=0)


def test_artifact_size_counts_files_and_folders(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"x" * 10)
    (tmp_path / "sub" / "b.bin").write_bytes(b"y" * 5)
    assert artifact_size_bytes(tmp_path / "a.bin") == 10
    assert artifact_size_bytes(tmp_path) == 15
    with pytest.raises(FileNotFoundError):
        artifact_size_bytes(tmp_path / "missing")
