"""TextClassifier: the packaged teacher, save/load round trips, encoder fallbacks."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from transformers import DistilBertConfig, DistilBertModel

from distillery.ml.models.modeling import TextClassifier, load_tokenizer

SENTENCES = [
    "The delivery arrived two days late and the box was crushed.",
    "Great value, works exactly as described.",
    "It is a phone case.",
]


@pytest.fixture(scope="module")
def builtin_teacher(labels: list[str]) -> TextClassifier:
    torch.manual_seed(0)
    return TextClassifier.from_pretrained_encoder("builtin", labels, dropout=0.1).eval()


def test_builtin_teacher_scores_real_text(builtin_teacher: TextClassifier) -> None:
    tokenizer = load_tokenizer("builtin")
    batch = tokenizer(SENTENCES, padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        logits = builtin_teacher(batch["input_ids"], batch["attention_mask"])
    assert logits.shape == (3, 3)
    assert torch.isfinite(logits).all()
    assert builtin_teacher.config.hidden_size == 384


def test_padding_does_not_change_logits(builtin_teacher: TextClassifier) -> None:
    tokenizer = load_tokenizer("builtin")
    alone = tokenizer(SENTENCES[2:], return_tensors="pt")
    padded = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        short = builtin_teacher(alone["input_ids"], alone["attention_mask"])
        batched = builtin_teacher(padded["input_ids"], padded["attention_mask"])
    assert torch.allclose(short[0], batched[2], atol=1e-5)


def test_save_load_round_trips_logits_exactly(
    builtin_teacher: TextClassifier, tmp_path: Path
) -> None:
    tokenizer = load_tokenizer("builtin")
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    builtin_teacher.save(tmp_path / "teacher")
    loaded = TextClassifier.load(tmp_path / "teacher")
    assert loaded.labels == builtin_teacher.labels
    assert not loaded.training
    with torch.no_grad():
        before = builtin_teacher(batch["input_ids"], batch["attention_mask"])
        after = loaded(batch["input_ids"], batch["attention_mask"])
    assert torch.equal(before, after)


def test_encoder_without_pooler_keyword_loads(
    tmp_path: Path, labels: list[str]
) -> None:
    # DistilBERT has no pooler and rejects add_pooling_layer.
    config = DistilBertConfig(
        vocab_size=100, dim=32, n_layers=1, n_heads=2, hidden_dim=37
    )
    DistilBertModel(config).save_pretrained(tmp_path / "distil")
    model = TextClassifier.from_pretrained_encoder(str(tmp_path / "distil"), labels)
    model.save(tmp_path / "clf")
    loaded = TextClassifier.load(tmp_path / "clf")
    ids = torch.tensor([[2, 11, 12, 3]])
    mask = torch.ones_like(ids)
    with torch.no_grad():
        assert torch.equal(model.eval()(ids, mask), loaded(ids, mask))


def test_set_dropout_reaches_every_layer(
    tiny_encoder_dir: Path, labels: list[str]
) -> None:
    model = TextClassifier.from_pretrained_encoder(str(tiny_encoder_dir), labels, 0.1)
    model.set_dropout(0.0)
    probabilities = {m.p for m in model.modules() if isinstance(m, nn.Dropout)}
    assert probabilities == {0.0}
    assert model.dropout_p == 0.0
    with pytest.raises(ValueError, match="dropout"):
        model.set_dropout(1.0)


def test_a_single_label_is_refused(tiny_encoder_dir: Path) -> None:
    with pytest.raises(ValueError, match="at least 2 labels"):
        TextClassifier.from_pretrained_encoder(str(tiny_encoder_dir), ["only"])
