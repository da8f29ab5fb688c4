"""Checkpoint files: safe loading, RNG round trips, rotation and fresh-start reasons."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from distillery.ml.models.modeling import TextClassifier
from distillery.ml.train.checkpoint import (
    STATE_FILE,
    CheckpointError,
    CheckpointManager,
    capture_rng_state,
    config_hash,
    load_state,
    restore_rng_state,
    save_state,
)


class _Payload:
    """Pickles into a call of ``open(marker, "w")``: proof that code ran on load."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


@pytest.fixture
def tiny_model(tiny_encoder_dir: Path, labels: list[str]) -> TextClassifier:
    torch.manual_seed(0)
    return TextClassifier.from_pretrained_encoder(str(tiny_encoder_dir), labels, 0.0)


def _draws() -> tuple[float, float, torch.Tensor]:
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path: Path) -> None:
    np.random.randn()  # leave a cached gaussian in numpy's state
    save_state({"rng": capture_rng_state()}, tmp_path / STATE_FILE)
    expected = _draws()
    _draws()
    restore_rng_state(load_state(tmp_path / STATE_FILE)["rng"])
    got = _draws()
    assert got[0] == expected[0]
    assert got[1] == expected[1]
    assert torch.equal(got[2], expected[2])


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / STATE_FILE
    torch.save({"optimizer": _Payload(marker)}, str(path))
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_state(path)
    assert not marker.exists()


def test_manager_refuses_a_tampered_checkpoint(
    tmp_path: Path, tiny_model: TextClassifier
) -> None:
    manager = CheckpointManager(tmp_path, "a" * 64, {"lr": 1.0}, "data")
    saved = manager.save(tiny_model, {"step": 1}, step=1, best_epoch=None)
    marker = tmp_path / "pwned"
    torch.save({"step": _Payload(marker)}, str(saved / STATE_FILE))
    with pytest.raises(CheckpointError):
        manager.load(manager.latest())
    assert not marker.exists()


def test_manager_keeps_the_last_two_and_writes_atomically(
    tmp_path: Path, tiny_model: TextClassifier
) -> None:
    manager = CheckpointManager(tmp_path, "b" * 64, {"lr": 1.0}, "data")
    manager.save_best(tiny_model, epoch=1)
    for step in (2, 4):
        manager.save(tiny_model, {"step": step}, step=step, best_epoch=1)
    manager.save_best(tiny_model, epoch=2)
    manager.save(tiny_model, {"step": 6}, step=6, best_epoch=2)
    assert [c.step for c in manager.checkpoints()] == [4, 6]
    # Epoch 1's best weights stay while the step-4 checkpoint refers to them.
    assert manager.best_dir(1).is_dir()
    assert manager.best_dir(2).is_dir()
    assert not list(manager.run_dir.glob(".tmp-*"))
    manager.save(tiny_model, {"step": 8}, step=8, best_epoch=2)
    assert not manager.best_dir(1).exists()
    weights, state = manager.load(manager.latest())
    assert state == {"step": 8}
    assert torch.equal(weights["head.weight"], tiny_model.head.weight)


def test_a_checkpoint_of_another_hash_is_refused(
    tmp_path: Path, tiny_model: TextClassifier
) -> None:
    first = CheckpointManager(tmp_path, "c" * 64, {"lr": 1.0}, "data")
    saved = first.save(tiny_model, {"step": 1}, step=1, best_epoch=None)
    meta = json.loads((saved / "meta.json").read_text())
    (saved / "meta.json").write_text(json.dumps({**meta, "config_hash": "d" * 64}))
    with pytest.raises(CheckpointError, match="config hash"):
        first.load(first.latest())


def test_fresh_start_names_the_changed_field(
    tmp_path: Path, tiny_model: TextClassifier
) -> None:
    old_fields = {"learning_rate": 1e-3, "seed": 1}
    old = CheckpointManager(tmp_path, config_hash(old_fields, "d"), old_fields, "d")
    old.save(tiny_model, {"step": 1}, step=1, best_epoch=None)
    new_fields = {"learning_rate": 2e-3, "seed": 1}
    new = CheckpointManager(tmp_path, config_hash(new_fields, "d"), new_fields, "d")
    assert new.latest() is None
    reason = new.explain_fresh_start()
    assert "learning_rate: 0.001 -> 0.002" in reason
    assert "seed" not in reason


def test_config_hash_depends_on_fields_and_data() -> None:
    base = config_hash({"a": 1, "b": 2}, "data")
    assert base == config_hash({"b": 2, "a": 1}, "data")
    assert base != config_hash({"a": 1, "b": 3}, "data")
    assert base != config_hash({"a": 1, "b": 2}, "other data")
