"""compute_loss and forward_backward: the loss of a micro-batch, accumulated gradients."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import pytest
import torch
import torch.nn.functional as F

from distillery.ml.train.config import TrainConfig
from distillery.ml.train.inputs import prepare_data
from distillery.ml.train.losses import kd_loss, representation_loss
from distillery.ml.train.model_factory import build_model
from distillery.ml.train.step import compute_loss, forward_backward
from distillery.ml.train.strategies import make_strategy

if TYPE_CHECKING:
    from conftest import Splits


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return {
        "labels": torch.tensor([0, 2, 1, 1]),
        "teacher_logits": torch.randn(4, 3, generator=gen),
        "teacher_pooled": torch.randn(4, 8, generator=gen),
    }


def test_ce_loss_is_cross_entropy_in_fp32(
    base_config: TrainConfig, batch: dict[str, torch.Tensor]
) -> None:
    logits = torch.randn(4, 3).bfloat16()
    loss = compute_loss(base_config, logits, batch)
    assert loss.dtype == torch.float32
    assert torch.equal(loss, F.cross_entropy(logits.float(), batch["labels"]))


def test_kd_loss_adds_the_weighted_representation_term(
    base_config: TrainConfig, batch: dict[str, torch.Tensor]
) -> None:
    config = replace(base_config, loss="kd", kd_alpha=0.7, kd_hidden_weight=0.5)
    logits, projected = torch.randn(4, 3), torch.randn(4, 8)
    distilled = kd_loss(
        logits, batch["teacher_logits"], batch["labels"], 0.7, config.kd_temperature
    )
    assert torch.equal(compute_loss(config, logits, batch), distilled)
    expected = distilled + 0.5 * representation_loss(projected, batch["teacher_pooled"])
    assert torch.allclose(compute_loss(config, (logits, projected), batch), expected)


def _gradients(
    config: TrainConfig, splits: Splits, indices: list[int]
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss forward_backward returns and the gradients it leaves."""
    torch.manual_seed(0)
    data = prepare_data(config, splits.train, splits.val, splits.labels, None, 0, 1)
    strategy = make_strategy(config, torch.device("cpu"), 0, 1)
    model = strategy.prepare(build_model(config, splits.labels, None))
    loss = forward_backward(
        model,
        data.train_set,
        indices,
        config=config,
        strategy=strategy,
        device=torch.device("cpu"),
        precision="fp32",
    )
    grads = {
        n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None
    }
    return loss, grads


def test_accumulated_micro_batches_give_the_whole_batchs_gradient(
    base_config: TrainConfig, splits: Splits
) -> None:
    indices = [3, 17, 5, 40, 22, 9, 61, 30]
    whole_loss, whole = _gradients(base_config, splits, indices)
    accumulated = replace(base_config, grad_accum_steps=4)
    micro_loss, micro = _gradients(accumulated, splits, indices)
    assert whole_loss.shape == micro_loss.shape == ()
    # Equal-sized micro-batches: the mean of their means is the batch's mean.
    assert micro_loss.item() == pytest.approx(whole_loss.item(), rel=1e-5)
    assert whole.keys() == micro.keys() and whole
    for name, grad in whole.items():
        assert torch.allclose(grad, micro[name], atol=1e-6), name
