"""Knowledge-distillation loss against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distillery.ml.train.losses import kd_loss, representation_loss


def test_alpha_zero_is_cross_entropy() -> None:
    student = torch.tensor([[1.0, -0.5, 2.0], [0.1, 0.2, -1.0]])
    teacher = torch.tensor([[5.0, 0.0, 0.0], [0.0, 3.0, 1.0]])
    labels = torch.tensor([2, 0])
    loss = kd_loss(student, teacher, labels, alpha=0.0, temperature=3.0)
    assert torch.allclose(loss, F.cross_entropy(student, labels))


def test_identical_logits_have_zero_kl() -> None:
    logits = torch.tensor([[1.0, -2.0, 0.5], [0.3, 0.3, 4.0]])
    loss = kd_loss(logits, logits.clone(), torch.tensor([0, 2]), 1.0, 2.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-7)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_matches_hand_computed_value(temperature: float) -> None:
    # Uniform student against a teacher preferring class 0; label 0.
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    labels = torch.tensor([0])
    # softmax(teacher / T) for two classes: [3^(1/T), 1] / (3^(1/T) + 1).
    p0 = 3.0 ** (1 / temperature) / (3.0 ** (1 / temperature) + 1.0)
    kl = p0 * math.log(p0 / 0.5) + (1 - p0) * math.log((1 - p0) / 0.5)
    expected = 0.25 * temperature**2 * kl + 0.75 * math.log(2.0)
    loss = kd_loss(student, teacher, labels, alpha=0.25, temperature=temperature)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_batchmean_averages_over_examples() -> None:
    student = torch.tensor([[0.0, 0.0]])
    teacher = torch.tensor([[math.log(3.0), 0.0]])
    one = kd_loss(student, teacher, torch.tensor([0]), 1.0, 1.0)
    two = kd_loss(
        student.repeat(2, 1), teacher.repeat(2, 1), torch.tensor([0, 0]), 1.0, 1.0
    )
    assert torch.allclose(one, two)


def test_no_gradient_reaches_the_teacher() -> None:
    student = torch.randn(4, 3, requires_grad=True)
    teacher = torch.randn(4, 3, requires_grad=True)
    kd_loss(student, teacher, torch.tensor([0, 1, 2, 0]), 0.5, 2.0).backward()
    assert student.grad is not None
    assert teacher.grad is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"alpha": 1.5, "temperature": 1.0}, "alpha"),
        ({"alpha": 0.5, "temperature": 0.0}, "temperature"),
    ],
)
def test_rejects_bad_hyperparameters(kwargs: dict, match: str) -> None:
    logits = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=match):
        kd_loss(logits, logits, torch.tensor([0, 1]), **kwargs)


def test_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="shape"):
        kd_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1]), 0.5, 1.0)


def test_representation_loss_is_one_minus_the_cosine() -> None:
    teacher = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 4.0]])
    # Same direction (any scale), opposite, orthogonal: 0, 2 and 1.
    student = torch.tensor([[5.0, 0.0], [0.0, -1.0], [-4.0, 3.0]])
    loss = representation_loss(student, teacher)
    assert loss.item() == pytest.approx((0.0 + 2.0 + 1.0) / 3, abs=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        representation_loss(student[:, :1], teacher)
