"""build_model: pretrained or saved start, dropout, projection, freezing, refusals."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import nn

from distillery.ml.train.config import TrainConfig
from distillery.ml.train.model_factory import build_model


def test_a_pretrained_encoder_gets_a_head_and_the_configured_dropout(
    base_config: TrainConfig, labels: list[str]
) -> None:
    model = build_model(replace(base_config, dropout=0.2), labels, None)
    assert model.training
    assert model.labels == labels
    assert model.head.out_features == len(labels)
    dropouts = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert dropouts and all(p == 0.2 for p in dropouts)
    assert all(p.requires_grad for p in model.parameters())


def test_a_saved_classifier_is_the_start_when_given(
    base_config: TrainConfig, labels: list[str], tmp_path: Path
) -> None:
    saved = build_model(base_config, labels, None)
    with torch.no_grad():
        saved.head.bias.fill_(0.5)
    saved.save(tmp_path / "start")
    model = build_model(base_config, labels, str(tmp_path / "start"))
    assert torch.equal(model.head.bias, torch.full((len(labels),), 0.5))


def test_a_saved_classifier_of_other_labels_is_refused(
    base_config: TrainConfig, labels: list[str], tmp_path: Path
) -> None:
    build_model(base_config, labels, None).save(tmp_path / "start")
    with pytest.raises(ValueError, match="was trained for labels"):
        build_model(base_config, ["x", "y", "z"], str(tmp_path / "start"))


def test_teacher_width_attaches_a_projection(
    base_config: TrainConfig, labels: list[str]
) -> None:
    model = build_model(base_config, labels, None, teacher_width=24)
    ids = torch.tensor([[2, 15, 16, 3]])
    logits, projected = model(ids, torch.ones_like(ids), with_projection=True)
    assert logits.shape == (1, len(labels))
    assert projected.shape == (1, 24)


def test_frozen_embeddings_take_no_gradient(
    base_config: TrainConfig, labels: list[str]
) -> None:
    model = build_model(replace(base_config, freeze_embeddings=True), labels, None)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen and all(".embeddings." in n for n in frozen)
    assert model.head.weight.requires_grad


def test_max_length_beyond_the_positions_is_refused(
    base_config: TrainConfig, labels: list[str]
) -> None:
    # The tiny encoder has 64 positions.
    with pytest.raises(ValueError, match="max_length 100 exceeds the encoder's 64"):
        build_model(replace(base_config, max_length=100), labels, None)


def test_freezing_every_block_is_refused(
    base_config: TrainConfig, labels: list[str]
) -> None:
    # The tiny encoder has 1 block.
    with pytest.raises(ValueError, match="leaves none of the encoder's 1 blocks"):
        build_model(replace(base_config, freeze_layers=1), labels, None)
