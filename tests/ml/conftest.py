"""Fixtures for the training library: a 1-layer, 32-wide BERT and learnable frames."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig, BertModel

from distillery.ml.train.config import TrainConfig

LABELS = ["neg", "neu", "pos"]
CLS_ID, SEP_ID = 2, 3


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised tiny BERT saved like a pretrained checkpoint."""
    path = tmp_path_factory.mktemp("tiny_bert")
    config = BertConfig(
        vocab_size=100,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
    )
    torch.manual_seed(0)
    BertModel(config, add_pooling_layer=False).save_pretrained(path)
    return path


def _make_frame(n: int, seed: int, with_teacher: bool = False) -> pd.DataFrame:
    """Rows whose label decides which token range their words come from."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = i % len(LABELS)
        words = rng.integers(10 + 30 * label, 40 + 30 * label, size=rng.integers(3, 19))
        ids = [CLS_ID, *words.tolist(), SEP_ID]
        row = {
            "text": " ".join(map(str, words)),
            "input_ids": ids,
            "attention_mask": [1] * len(ids),
            "label": label,
        }
        if with_teacher:
            # A confident, mostly right teacher.
            logits = rng.normal(0.0, 0.5, size=len(LABELS))
            logits[label] += 3.0
            row["teacher_logits"] = logits.tolist()
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def labels() -> list[str]:
    return list(LABELS)


@pytest.fixture(scope="session")
def make_frame() -> Callable[..., pd.DataFrame]:
    """``make_frame(n, seed, with_teacher=False)`` builds a learnable frame."""
    return _make_frame


@pytest.fixture(scope="session")
def train_df() -> pd.DataFrame:
    """64 rows with cached teacher logits: 8 steps per epoch at batch 8."""
    return _make_frame(64, seed=1, with_teacher=True)


@pytest.fixture(scope="session")
def val_df() -> pd.DataFrame:
    return _make_frame(30, seed=2)


@dataclass(frozen=True)
class Splits:
    """Training and validation frames with their label vocabulary."""

    train: pd.DataFrame
    val: pd.DataFrame
    labels: list[str]


@pytest.fixture(scope="session")
def splits(train_df: pd.DataFrame, val_df: pd.DataFrame, labels: list[str]) -> Splits:
    return Splits(train_df, val_df, labels)


@pytest.fixture
def base_config(tiny_encoder_dir: Path, tmp_path: Path) -> TrainConfig:
    """Fast settings: 8 steps per epoch, no early stopping, dropout off."""
    return TrainConfig(
        model_name_or_path=str(tiny_encoder_dir),
        max_length=32,
        batch_size=8,
        learning_rate=3e-3,
        weight_decay=0.01,
        warmup_ratio=0.1,
        epochs=2,
        dropout=0.0,
        patience=None,
        seed=7,
        checkpoint_dir=str(tmp_path / "ckpt"),
        checkpoint_every_steps=None,
        num_threads=1,
        bucket_multiplier=2,
        eval_batch_size=16,
        device="cpu",
        log_every_steps=4,
        # Exact comparisons (world sizes, strategies, resumes) need fp32 numerics;
        # bf16 autocast has its own tests.
        precision="fp32",
    )


CUE_FILLER = [
    "the",
    "flight",
    "was",
    "today",
    "and",
    "crew",
    "seat",
    "my",
    "bag",
    "gate",
]


def _cue_corpus(seed: int, rows: int = 300) -> tuple[list[str], list[str]]:
    """Texts whose label hangs on one cue word ("awful"/"great") among filler words."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(rows):
        label = ("negative", "positive")[i % 2]
        words = list(rng.choice(CUE_FILLER, size=6))
        words.insert(
            int(rng.integers(0, 6)), "awful" if label == "negative" else "great"
        )
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


@pytest.fixture(scope="session")
def cue_corpus() -> Callable[..., tuple[list[str], list[str]]]:
    """``cue_corpus(seed, rows=300)``: texts whose label is one cue word."""
    return _cue_corpus


@pytest.fixture(scope="session")
def cue_model() -> Callable[[float], object]:
    """``cue_model(C)``: a real word TF-IDF logistic regression fit on the cue corpus
    (normalising its input), whose answers hang on the cue words."""
    from distillery.ml.data.text import normalize_text  # noqa: PLC0415
    from distillery.ml.report.baseline import (  # noqa: PLC0415
        BaselineGrid,
        BaselinePredictor,
        fit_baseline,
    )

    def fit(c: float) -> BaselinePredictor:
        grid = BaselineGrid.from_dict(
            {"word_ngrams": [[1, 1]], "char_ngrams": [None], "C": [c]}
        )
        pipeline, _ = fit_baseline(*_cue_corpus(0), *_cue_corpus(1, 60), grid)
        return BaselinePredictor(pipeline, normalize=normalize_text)

    return fit
