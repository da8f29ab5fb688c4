"""Training losses."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    alpha: float,
    temperature: float,
) -> torch.Tensor:
    """Knowledge-distillation loss (Hinton et al., 2015).

    ``alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T))`` averaged over
    the batch, plus ``(1 - alpha) * CE(student, labels)``. The ``T^2`` factor keeps
    the soft-target gradients on the same scale as the hard-label ones when ``T``
    changes.

    Args:
        student_logits: ``(B, C)`` student outputs.
        teacher_logits: ``(B, C)`` teacher outputs (no gradient flows into them).
        labels: ``(B,)`` gold class indices.
        alpha: Weight of the soft-target term, in ``[0, 1]``.
        temperature: Softmax temperature, ``> 0``.

    Returns:
        Scalar loss.

    Raises:
        ValueError: On shapes that disagree or out-of-range ``alpha``/``temperature``.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ in shape"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    # Float32 so that bf16 autocast does not degrade the log-probabilities.
    student = student_logits.float()
    teacher = teacher_logits.detach().float()
    soft = F.kl_div(
        F.log_softmax(student / temperature, dim=-1),
        F.log_softmax(teacher / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    hard = F.cross_entropy(student, labels)
    return alpha * temperature**2 * soft + (1.0 - alpha) * hard


def representation_loss(
    student_projected: torch.Tensor, teacher_pooled: torch.Tensor
) -> torch.Tensor:
    """One minus the cosine between the student's projected pooled embedding and the
    teacher's, averaged over the batch (the cosine term of DistilBERT's loss, on the
    pooled sentence embedding, so that it holds across tokenizers).

    Args:
        student_projected: ``(B, H)`` student embeddings mapped to the teacher's width.
        teacher_pooled: ``(B, H)`` teacher embeddings (no gradient flows into them).

    Returns:
        Scalar loss in ``[0, 2]``.

    Raises:
        ValueError: If the shapes differ.
    """
    if student_projected.shape != teacher_pooled.shape:
        raise ValueError(
            f"student embeddings {tuple(student_projected.shape)} and teacher "
            f"embeddings {tuple(teacher_pooled.shape)} differ in shape"
        )
    cosine = F.cosine_similarity(
        student_projected.float(), teacher_pooled.detach().float(), dim=-1
    )
    return (1.0 - cosine).mean()
