"""Run state: early-stopping bookkeeping, checkpointed state, publishing the best."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from distillery.ml.train.checkpoint import CheckpointManager, capture_rng_state
from distillery.ml.train.config import TrainConfig
from distillery.ml.train.run_state import (
    Progress,
    Run,
    publish_best,
    record_validation,
)


def _scores(f1: float) -> dict[str, float]:
    return {"val_loss": 1.0 - f1, "val_accuracy": f1, "val_macro_f1": f1}


def test_record_validation_keeps_the_best_epoch_and_counts_patience() -> None:
    progress = Progress(step=8)
    for epoch, f1 in enumerate([0.5, 0.7, 0.6, 0.7], start=1):
        record_validation(progress, epoch, _scores(f1), patience=2)
        if epoch == 3:
            assert (progress.bad_epochs, progress.stopped_early) == (1, False)
    # A tie is no improvement: the second miss in a row runs out of patience.
    assert (progress.best_epoch, progress.best_val_macro_f1) == (2, 0.7)
    assert (progress.bad_epochs, progress.stopped_early) == (2, True)
    assert [e["epoch"] for e in progress.epoch_history] == [1, 2, 3, 4]
    assert progress.epoch_history[0] == {"epoch": 1, "step": 8, **_scores(0.5)}


def test_without_patience_a_run_never_stops_early() -> None:
    progress = Progress()
    for epoch in range(1, 6):
        record_validation(progress, epoch, _scores(0.1), patience=None)
    assert (progress.best_epoch, progress.bad_epochs) == (1, 4)
    assert not progress.stopped_early


class _RecordingStrategy:
    """Stands in for a Strategy: keeps what save_checkpoint was given."""

    def __init__(self) -> None:
        self.saved: list[tuple[Any, ...]] = []

    def save_checkpoint(self, *args: Any) -> None:
        self.saved.append(args)


def _run(rank: int = 0, world_size: int = 1) -> Run:
    """A one-process run whose only real parts are the schedule and progress."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=0.1)
    return Run(
        config=TrainConfig(),
        data=None,
        labels=["a", "b"],
        rank=rank,
        world_size=world_size,
        device=torch.device("cpu"),
        strategy=_RecordingStrategy(),
        optimizer=optimizer,
        scheduler=LambdaLR(optimizer, lambda step: 0.5),
        ckpt="ckpt",
        progress=Progress(step=12, best_epoch=2),
    )


def test_rank_zero_is_the_master_and_one_rank_is_no_ddp() -> None:
    run = _run()
    assert run.master_process and not run.ddp
    assert run.broadcast({"x": 1}) == {"x": 1}  # nothing to exchange
    other = _run(rank=1, world_size=2)
    assert not other.master_process and other.ddp


def test_save_checkpoint_hands_the_strategy_everything_but_the_weights() -> None:
    run = _run()
    run.save_checkpoint()
    ((ckpt, optimizer, state, step, best_epoch),) = run.strategy.saved
    assert (ckpt, optimizer, step, best_epoch) == ("ckpt", run.optimizer, 12, 2)
    assert state["scheduler"] == run.scheduler.state_dict()
    assert Progress(**state["progress"]) == run.progress
    # One process: its own RNG state, as a resume restores it.
    assert len(state["rng"]) == 1
    assert state["rng"][0].keys() == capture_rng_state().keys()


def test_publish_best_replaces_the_model_folder(tmp_path: Path) -> None:
    ckpt = CheckpointManager(tmp_path / "ckpt", "0" * 64, {}, "data")
    best = ckpt.best_dir(3)
    best.mkdir(parents=True)
    (best / "weights").write_text("epoch 3")
    stale = tmp_path / "out" / "model"
    stale.mkdir(parents=True)
    (stale / "old").write_text("previous run")
    progress = Progress(best_epoch=3, best_val_macro_f1=0.9)
    model_dir = publish_best(ckpt, progress, tmp_path / "out")
    assert model_dir == stale
    assert sorted(p.name for p in model_dir.iterdir()) == ["weights"]
    assert (model_dir / "weights").read_text() == "epoch 3"
    assert best.is_dir()  # copied, not moved
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["model"]


def test_publish_best_needs_the_best_weights(tmp_path: Path) -> None:
    ckpt = CheckpointManager(tmp_path / "ckpt", "0" * 64, {}, "data")
    with pytest.raises(FileNotFoundError):
        publish_best(ckpt, Progress(best_epoch=1), tmp_path / "out")
