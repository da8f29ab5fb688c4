"""Validation during training: each rank scores a shard, rank 0 scores the whole set."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from distillery.ml.data.batches import PadCollator, TokenDataset, shard_by_length
from distillery.ml.metrics import classification_metrics
from distillery.ml.train.config import TrainConfig
from distillery.ml.train.strategies import autocast

# This rank's validation rows and their logits: ((n,) int64, (n, C) float32).
_Shard = tuple[np.ndarray, np.ndarray]


@torch.no_grad()
def evaluate(
    raw_model: nn.Module,
    val_set: TokenDataset,
    *,
    labels: list[str],
    config: TrainConfig,
    device: torch.device,
    rank: int,
    world_size: int,
    lockstep: bool = False,
    precision: str = "fp32",
) -> dict[str, float] | None:
    """Validation loss, accuracy and macro-F1 over all ranks' shards; rank 0 only.

    Each rank scores a disjoint shard; the logits are gathered and scored once on
    rank 0, so the numbers do not depend on the world size. With ``lockstep``
    (a sharded model, whose forward is a collective) every rank runs as many
    forward passes as the busiest one, the extra ones on a throwaway row. A
    collective when ``world_size > 1``: every rank calls it.

    Args:
        raw_model: The model to score (unwrapped, or the sharded module itself);
            left in train mode.
        val_set: The whole validation set (every rank passes the same).
        labels: Label vocabulary; ``val_set.labels`` indexes it.
        config: Supplies ``eval_batch_size`` and ``pad_token_id``.
        device: Where the model runs.
        rank: This rank.
        world_size: Ranks taking part.
        lockstep: Run the same number of forward passes on every rank.
        precision: ``fp32`` or ``bf16`` (autocast) forward passes.

    Returns:
        ``val_loss``, ``val_accuracy`` and ``val_macro_f1`` on rank 0; None on the
        other ranks.
    """
    raw_model.eval()
    batches = shard_by_length(val_set.lengths, config.eval_batch_size, world_size, rank)
    passes = len(batches)
    if lockstep and world_size > 1:
        passes = _most_passes(passes, device)
    local = _score_shard(
        raw_model,
        val_set,
        batches,
        passes,
        collate=PadCollator(config.pad_token_id),
        num_labels=len(labels),
        device=device,
        precision=precision,
    )
    raw_model.train()
    gathered: list[Any] = [local]
    if world_size > 1:
        gathered = [None] * world_size
        dist.all_gather_object(gathered, local)
    if rank != 0:
        return None
    return _scores(val_set, labels, gathered)


def _most_passes(passes: int, device: torch.device) -> int:
    """The largest number of forward passes any rank needs (a collective)."""
    most = torch.tensor(passes, device=device)
    dist.all_reduce(most, op=dist.ReduceOp.MAX)
    return int(most)


def _score_shard(
    raw_model: nn.Module,
    val_set: TokenDataset,
    batches: list[list[int]],
    passes: int,
    *,
    collate: PadCollator,
    num_labels: int,
    device: torch.device,
    precision: str,
) -> _Shard:
    """This rank's row indices and logits; passes beyond ``batches`` score row 0
    and are dropped (lockstep)."""
    indices: list[int] = []
    outputs: list[np.ndarray] = []
    for n in range(passes):
        idx = batches[n] if n < len(batches) else [0]
        batch = collate([val_set[i] for i in idx])
        with autocast(precision, device):
            logits = raw_model(
                batch["input_ids"].to(device), batch["attention_mask"].to(device)
            )  # (b, C)
        if n < len(batches):
            indices.extend(idx)
            outputs.append(logits.float().cpu().numpy())
    return (
        np.asarray(indices, dtype=np.int64),
        np.concatenate(outputs) if outputs else np.zeros((0, num_labels), np.float32),
    )


def _scores(
    val_set: TokenDataset, labels: list[str], gathered: list[_Shard]
) -> dict[str, float]:
    """Loss, accuracy and macro-F1 of every rank's logits, put back in row order."""
    order = np.concatenate([g[0] for g in gathered])
    logits = np.empty((len(val_set), len(labels)), dtype=np.float32)  # (N, C)
    logits[order] = np.concatenate([g[1] for g in gathered])
    loss = F.cross_entropy(torch.from_numpy(logits), torch.from_numpy(val_set.labels))
    scores = classification_metrics(val_set.labels, logits.argmax(axis=1), labels)
    return {
        "val_loss": float(loss),
        "val_accuracy": scores["accuracy"],
        "val_macro_f1": scores["macro_f1"],
    }
