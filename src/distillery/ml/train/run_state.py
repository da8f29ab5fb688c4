"""The state one training run shares on a rank, and what it checkpoints.

:class:`Run` holds the pieces of the run (config, data, strategy, optimizer,
schedule, checkpoints); its :class:`Progress` is saved in every checkpoint, with
the LR schedule and every rank's RNG state (:meth:`Run.save_checkpoint`). Rank 0
keeps the early-stopping bookkeeping (:func:`record_validation`) and finally
publishes the best epoch's weights (:func:`publish_best`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.optim.lr_scheduler import LRScheduler

from distillery.ml.train.checkpoint import CheckpointManager, capture_rng_state
from distillery.ml.train.config import TrainConfig
from distillery.ml.train.inputs import TrainingData
from distillery.ml.train.strategies import Strategy

logger = logging.getLogger(__name__)


@dataclass
class Progress:
    """Loop position and early-stopping state; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0  # 0-based epoch in progress
    batch_in_epoch: int = 0  # optimizer steps already done in `epoch`
    best_val_macro_f1: float = -1.0
    best_epoch: int | None = None
    bad_epochs: int = 0
    finished: bool = False
    stopped_early: bool = False
    step_history: list[dict[str, float]] = field(default_factory=list)
    epoch_history: list[dict[str, float]] = field(default_factory=list)


def record_validation(
    progress: Progress, epoch: int, scores: dict[str, float], patience: int | None
) -> None:
    """Add an epoch's validation scores; keep track of the best epoch and patience.

    Args:
        progress: Updated in place: ``epoch_history``, the best epoch and its
            macro-F1, ``bad_epochs`` and ``stopped_early``.
        epoch: The epoch just validated, numbered from 1.
        scores: ``val_loss``, ``val_accuracy`` and ``val_macro_f1``.
        patience: Epochs without a better macro-F1 before stopping; None never
            stops.
    """
    progress.epoch_history.append({"epoch": epoch, "step": progress.step, **scores})
    if scores["val_macro_f1"] > progress.best_val_macro_f1:
        progress.best_val_macro_f1 = scores["val_macro_f1"]
        progress.best_epoch = epoch
        progress.bad_epochs = 0
    else:
        progress.bad_epochs += 1
    progress.stopped_early = patience is not None and progress.bad_epochs >= patience


@dataclass
class Run:
    """What the pieces of one training run share on this rank.

    Attributes:
        config: Training settings.
        data: Datasets, sampler and step counts.
        labels: Label vocabulary.
        rank: This rank.
        world_size: Ranks taking part.
        device: Where the model runs.
        strategy: Holds the model; saves and restores checkpoints.
        optimizer: Built on the prepared model.
        scheduler: The learning-rate schedule.
        ckpt: This run's checkpoints.
        precision: Resolved forward-pass precision: ``fp32`` or ``bf16``.
        progress: Position and early-stopping state.
    """

    config: TrainConfig
    data: TrainingData
    labels: list[str]
    rank: int
    world_size: int
    device: torch.device
    strategy: Strategy
    optimizer: torch.optim.Optimizer
    scheduler: LRScheduler
    ckpt: CheckpointManager
    precision: str = "fp32"  # resolved: fp32 or bf16 (autocast)
    progress: Progress = field(default_factory=Progress)

    @property
    def master_process(self) -> bool:
        """Rank 0 alone logs, checkpoints and writes files."""
        return self.rank == 0

    @property
    def ddp(self) -> bool:
        """Whether other ranks take part."""
        return self.world_size > 1

    def broadcast(self, obj: Any) -> Any:
        """Send rank 0's python object to every rank."""
        if not self.ddp:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def save_checkpoint(self) -> None:
        """Collective: every rank's RNG state, then the strategy writes."""
        rng = _gather_rng_states(self.ddp, self.world_size)
        self.strategy.save_checkpoint(
            self.ckpt,
            self.optimizer,
            _checkpoint_state(self.scheduler, self.progress, rng),
            self.progress.step,
            self.progress.best_epoch,
        )


def _gather_rng_states(ddp: bool, world_size: int) -> list[dict[str, Any]]:
    """Every rank's RNG state, so a resume restores each rank's dropout stream."""
    state = capture_rng_state()
    if not ddp:
        return [state]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, state)
    return gathered


def _checkpoint_state(
    scheduler: LRScheduler, progress: Progress, rng: list[dict[str, Any]]
) -> dict[str, Any]:
    """Everything but the weights and optimizer, which the strategy writes."""
    return {
        "scheduler": scheduler.state_dict(),
        "progress": dataclasses.asdict(progress),
        "rng": rng,
    }


def publish_best(ckpt: CheckpointManager, progress: Progress, output_dir: Path) -> Path:
    """Rank 0: copy the best epoch's weights to ``output_dir/model`` atomically.

    Args:
        ckpt: Holds the best epoch's weights (:meth:`CheckpointManager.best_dir`).
        progress: Names the best epoch.
        output_dir: Parent of ``model/``, which is replaced if present.

    Returns:
        The ``model`` folder.
    """
    model_dir = output_dir / "model"
    staging = output_dir / f".tmp-model-{uuid.uuid4().hex[:8]}"
    shutil.copytree(ckpt.best_dir(progress.best_epoch), staging)
    if model_dir.exists():
        shutil.rmtree(model_dir)
    os.replace(staging, model_dir)
    logger.info(
        "Wrote model of epoch %d (val macro-F1 %.4f) to %s",
        progress.best_epoch,
        progress.best_val_macro_f1,
        model_dir,
    )
    return model_dir
