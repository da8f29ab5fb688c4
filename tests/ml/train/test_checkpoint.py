"""Checkpoint files: safe loading, checksums, RNG round trips, rotation, fresh starts."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from distillery.checksums import file_sha256
from distillery.ml.models.modeling import WEIGHTS_FILE, TextClassifier
from distillery.ml.train.checkpoint import (
    META_FILE,
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
    # Whoever can write the state can rewrite its checksum too: load stays safe.
    meta = json.loads((saved / META_FILE).read_text())
    meta["files"][STATE_FILE] = file_sha256(saved / STATE_FILE)
    (saved / META_FILE).write_text(json.dumps(meta))
    checkpoint = manager.latest()
    assert checkpoint is not None
    with pytest.raises(CheckpointError, match="refusing to load"):
        manager.load(checkpoint)
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
    assert first.latest() is None
    with pytest.raises(CheckpointError, match="config hash"):
        first.load(first.checkpoints()[-1])


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


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "name"),
    [
        (_truncate, WEIGHTS_FILE),
        (_flip_a_byte, WEIGHTS_FILE),
        (_truncate, STATE_FILE),
        (_flip_a_byte, STATE_FILE),
        (lambda path: path.unlink(), "config.json"),
    ],
)
def test_a_damaged_checkpoint_is_skipped_for_the_previous_one(
    tmp_path: Path,
    tiny_model: TextClassifier,
    caplog: pytest.LogCaptureFixture,
    damage,
    name: str,
) -> None:
    manager = CheckpointManager(tmp_path, "e" * 64, {"lr": 1.0}, "data")
    manager.save(tiny_model, {"step": 2}, step=2, best_epoch=None)
    head_at_step_2 = tiny_model.head.weight.detach().clone()
    with torch.no_grad():
        tiny_model.head.weight.add_(1.0)
    newest = manager.save(tiny_model, {"step": 4}, step=4, best_epoch=None)
    damage(newest / name)

    with caplog.at_level(logging.WARNING, logger="distillery.ml.train.checkpoint"):
        checkpoint = manager.latest()
    assert checkpoint is not None and checkpoint.step == 2
    assert str(newest / name) in caplog.text  # the warning names the file
    assert [path for path, _ in manager.skipped] == [newest]
    weights, state = manager.load(checkpoint)
    assert state == {"step": 2}
    assert torch.equal(weights["head.weight"], head_at_step_2)
    with pytest.raises(CheckpointError, match=name):
        manager.load(manager.checkpoints()[-1])


def test_damaged_best_weights_skip_the_checkpoints_that_end_with_them(
    tmp_path: Path, tiny_model: TextClassifier, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CheckpointManager(tmp_path, "f" * 64, {"lr": 1.0}, "data", keep=3)
    manager.save_best(tiny_model, epoch=1)
    manager.save(tiny_model, {"step": 2}, step=2, best_epoch=1)
    manager.save_best(tiny_model, epoch=2)
    manager.save(tiny_model, {"step": 4}, step=4, best_epoch=2)
    manager.save(tiny_model, {"step": 6}, step=6, best_epoch=2)
    best_weights = manager.best_dir(2) / WEIGHTS_FILE
    _truncate(best_weights)

    with caplog.at_level(logging.WARNING, logger="distillery.ml.train.checkpoint"):
        checkpoint = manager.latest()
    assert checkpoint is not None and checkpoint.step == 2  # its best epoch is whole
    assert caplog.text.count(str(best_weights)) == 2  # steps 6 and 4 skipped

    _truncate(manager.best_dir(1) / WEIGHTS_FILE)
    assert manager.latest() is None
    assert "3 failed their checksums" in manager.explain_fresh_start()


def test_meta_is_written_last_and_a_folder_without_it_is_no_checkpoint(
    tmp_path: Path, tiny_model: TextClassifier
) -> None:
    manager = CheckpointManager(tmp_path, "0" * 64, {"lr": 1.0}, "data")
    saved = manager.save(tiny_model, {"step": 2}, step=2, best_epoch=None)
    meta = json.loads((saved / META_FILE).read_text())
    assert set(meta["files"]) == {p.name for p in saved.iterdir()} - {META_FILE}
    assert meta["files"][WEIGHTS_FILE] == file_sha256(saved / WEIGHTS_FILE)
    assert not list(saved.glob(".*"))  # no partial meta left behind
    (saved / META_FILE).unlink()
    assert manager.checkpoints() == []


def test_a_checkpoint_without_checksums_is_skipped(
    tmp_path: Path, tiny_model: TextClassifier, caplog: pytest.LogCaptureFixture
) -> None:
    manager = CheckpointManager(tmp_path, "1" * 64, {"lr": 1.0}, "data")
    saved = manager.save(tiny_model, {"step": 2}, step=2, best_epoch=None)
    meta = json.loads((saved / META_FILE).read_text())
    del meta["files"], meta["best_files"]
    (saved / META_FILE).write_text(json.dumps(meta))  # as older versions wrote it
    with caplog.at_level(logging.WARNING, logger="distillery.ml.train.checkpoint"):
        assert manager.latest() is None
    assert "records no checksums" in caplog.text
    with pytest.raises(CheckpointError, match="records no checksums"):
        manager.load(manager.checkpoints()[-1])
