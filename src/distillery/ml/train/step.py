"""The forward and backward passes of one optimizer step, and the training loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from distillery.ml.data.batches import PadCollator, TokenDataset
from distillery.ml.train.config import TrainConfig
from distillery.ml.train.losses import kd_loss, representation_loss
from distillery.ml.train.strategies import Strategy, autocast


def compute_loss(
    config: TrainConfig,
    outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    batch: dict[str, torch.Tensor],
) -> torch.Tensor:
    """The training loss of a micro-batch.

    Args:
        config: Supplies ``loss`` (``ce`` or ``kd``) and the ``kd_*`` weights.
        outputs: The ``(b, C)`` logits, or the logits and the ``(b, H)`` projected
            pooled embedding when ``kd_hidden_weight`` is set.
        batch: The collated micro-batch: ``labels`` and, for ``kd``,
            ``teacher_logits`` (and ``teacher_pooled`` with a projection).

    Returns:
        The scalar loss, in fp32 whatever the autocast precision.
    """
    projected = None
    if isinstance(outputs, tuple):
        outputs, projected = outputs
    logits = outputs.float()  # (b, C); losses in fp32 under bf16 autocast
    if config.loss == "ce":
        return F.cross_entropy(logits, batch["labels"])
    loss = kd_loss(
        logits,
        batch["teacher_logits"],
        batch["labels"],
        config.kd_alpha,
        config.kd_temperature,
    )
    if projected is not None:
        loss = loss + config.kd_hidden_weight * representation_loss(
            projected, batch["teacher_pooled"]
        )
    return loss


def forward_backward(
    model: nn.Module,
    train_set: TokenDataset,
    indices: list[int],
    *,
    config: TrainConfig,
    strategy: Strategy,
    device: torch.device,
    precision: str,
) -> torch.Tensor:
    """Accumulate the gradients of one optimizer step over its micro-batches.

    ``indices`` (this rank's share of a global batch) is split into
    ``config.grad_accum_steps`` micro-batches; each adds the gradient of its loss
    divided by the number of micro-batches.

    Args:
        model: The model as the strategy prepared it (e.g. DDP-wrapped).
        train_set: Training rows that ``indices`` index.
        indices: This rank's rows of the step.
        config: Supplies ``grad_accum_steps``, ``pad_token_id`` and the loss.
        strategy: Skips the gradient exchange on all but the last micro-step.
        device: Where the model runs.
        precision: ``fp32`` or ``bf16`` (autocast) forward passes.

    Returns:
        The mean of the micro-batches' losses on this rank, a 0-d tensor on
        ``device`` (read it only when needed: reading it syncs a GPU).
    """
    steps = config.grad_accum_steps
    collate = PadCollator(config.pad_token_id)
    loss_sum = torch.zeros((), device=device)
    for micro_step in range(steps):
        # Strided, so each micro-batch spans the (sorted) lengths alike, and padded
        # on its own, to its longest row.
        micro = collate([train_set[i] for i in indices[micro_step::steps]])
        micro = {k: v.to(device) for k, v in micro.items()}
        # Gradients are exchanged only on the last micro-step.
        with strategy.no_sync(micro_step == steps - 1):
            with autocast(precision, device):
                outputs = model(  # (b, C) logits [, (b, H) projected embeddings]
                    micro["input_ids"],
                    micro["attention_mask"],
                    **({"with_projection": True} if "teacher_pooled" in micro else {}),
                )
            loss = compute_loss(config, outputs, micro)
            (loss / steps).backward()
        loss_sum += loss.detach()
    return loss_sum / steps
