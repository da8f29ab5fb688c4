"""No checkpoint of any strategy runs code on load, whatever an attacker writes in it.

Each test plants a pickle whose unpickling creates a marker file in one of the files a
resume reads, and re-records the checksums as someone with write access to the folder
could. Loading must refuse with a CheckpointError, and the marker must never appear.
"""

from __future__ import annotations

import json
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from distillery.checksums import folder_digests
from distillery.ml.models.modeling import WEIGHTS_FILE, TextClassifier
from distillery.ml.train.checkpoint import (
    META_FILE,
    SHARDED_DIR,
    SHARDED_INDEX,
    STATE_FILE,
    CheckpointError,
    CheckpointManager,
)
from distillery.ml.train.sharded import load_sharded, save_sharded

LABELS = ["neg", "neu", "pos"]


class Payload:
    """Unpickling it creates ``marker``: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    path = tmp_path / "payload-ran"
    pickle.loads(pickle.dumps(Payload(path)))  # the payload is live ...
    assert path.exists()
    path.unlink()  # ... and armed again
    return path


def _resign(checkpoint: Path) -> None:
    """Record the planted files' checksums, as write access to the folder allows."""
    meta = json.loads((checkpoint / META_FILE).read_text())
    meta["files"] = folder_digests(checkpoint, exclude=frozenset({META_FILE}))
    (checkpoint / META_FILE).write_text(json.dumps(meta))


def _plant(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(Payload(marker)))


@pytest.fixture
def replicated_checkpoint(
    tmp_path: Path, tiny_classifier: Callable[..., TextClassifier]
) -> tuple[CheckpointManager, Path]:
    manager = CheckpointManager(tmp_path / "ckpt", "2" * 64, {"lr": 1.0}, "data")
    model = tiny_classifier(LABELS)
    state = {"optimizer": torch.optim.AdamW(model.parameters()).state_dict()}
    return manager, manager.save(model, state, step=3, best_epoch=None)


@pytest.mark.parametrize("planted", [STATE_FILE, WEIGHTS_FILE])
def test_ddp_checkpoint_files_holding_a_pickle_are_refused(
    replicated_checkpoint: tuple[CheckpointManager, Path], planted: str, marker: Path
) -> None:
    manager, checkpoint = replicated_checkpoint
    if planted == STATE_FILE:  # a torch.save'd state, as the format expects
        torch.save({"step": 3, "evil": Payload(marker)}, checkpoint / planted)
    else:
        _plant(checkpoint / planted, marker)
    _resign(checkpoint)
    (found,) = manager.checkpoints()
    with pytest.raises(CheckpointError, match=planted):
        manager.load(found)
    assert not marker.exists()


@pytest.fixture
def one_rank_group() -> Iterator[None]:
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _sharded(
    classifier: TextClassifier,
) -> tuple[TextClassifier, torch.optim.Optimizer]:
    for layer in classifier.encoder.encoder.layer:
        fully_shard(layer)
    fully_shard(classifier)
    return classifier, torch.optim.AdamW(classifier.parameters(), lr=1e-3)


def _full(value: torch.Tensor) -> torch.Tensor:
    return value.full_tensor() if isinstance(value, DTensor) else value


def test_sharded_state_round_trips_without_pickle(
    one_rank_group: None, tiny_classifier: Callable[..., TextClassifier], tmp_path: Path
) -> None:
    model, optimizer = _sharded(tiny_classifier(LABELS, seed=1))
    ids = torch.randint(5, 90, (4, 7))
    model(ids, torch.ones_like(ids)).sum().backward()
    optimizer.step()
    save_sharded(model, optimizer, tmp_path / SHARDED_DIR)
    files = sorted(p.name for p in (tmp_path / SHARDED_DIR).iterdir())
    assert files == [SHARDED_INDEX, "rank-00000.safetensors"]

    fresh, fresh_optimizer = _sharded(tiny_classifier(LABELS, seed=2))
    load_sharded(fresh, fresh_optimizer, tmp_path / SHARDED_DIR)
    for (name, a), b in zip(  # every weight, gathered
        model.state_dict().items(), fresh.state_dict().values(), strict=True
    ):
        assert torch.equal(_full(a), _full(b)), name
    saved, loaded = optimizer.state_dict(), fresh_optimizer.state_dict()
    assert saved["param_groups"] == loaded["param_groups"]
    for key, entries in saved["state"].items():
        for name, value in entries.items():
            assert torch.equal(_full(value), _full(loaded["state"][key][name]))


@pytest.mark.parametrize("planted", [SHARDED_INDEX, "rank-00000.safetensors"])
def test_sharded_files_holding_a_pickle_are_refused(
    one_rank_group: None,
    tiny_classifier: Callable[..., TextClassifier],
    tmp_path: Path,
    planted: str,
    marker: Path,
) -> None:
    model, optimizer = _sharded(tiny_classifier(LABELS))
    folder = tmp_path / SHARDED_DIR
    save_sharded(model, optimizer, folder)
    _plant(folder / planted, marker)
    with pytest.raises(CheckpointError, match=planted):
        load_sharded(model, optimizer, folder)
    assert not marker.exists()


def test_a_sharded_checkpoint_in_the_pickled_dcp_layout_is_not_used(
    replicated_checkpoint: tuple[CheckpointManager, Path], marker: Path
) -> None:
    manager, checkpoint = replicated_checkpoint
    (checkpoint / SHARDED_DIR).mkdir()
    _plant(checkpoint / SHARDED_DIR / ".metadata", marker)  # DCP's pickled metadata
    _resign(checkpoint)
    assert manager.latest() is None
    assert "older DCP layout" in manager.skipped[0][1]
    with pytest.raises(CheckpointError, match="older DCP layout"):
        manager.load(manager.checkpoints()[0])
    assert not marker.exists()
