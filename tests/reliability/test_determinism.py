"""A tiny training run twice with the same seed: identical metrics and weights."""

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from safetensors.torch import load_file

from distillery.ml.train.config import TrainConfig
from distillery.ml.train.launch import launch_training


def test_same_seed_same_metrics_and_weights(
    tiny_teacher_dir: Path,
    tmp_path: Path,
    trip_split: Callable[[int, int], pd.DataFrame],
) -> None:
    train, val = trip_split(40, 0), trip_split(8, 1000)
    config = TrainConfig(
        model_name_or_path=str(tiny_teacher_dir),
        max_length=32,
        batch_size=8,
        learning_rate=1e-3,
        epochs=2,
        dropout=0.1,  # dropout on: its randomness must come from the seed too
        nproc=1,
        num_threads=1,
        seed=7,
    )
    labels = ["negative", "positive"]

    first = launch_training(config, train, val, labels, tmp_path / "a")
    second = launch_training(config, train, val, labels, tmp_path / "b")

    assert first.step_history and first.epoch_history
    assert [(r["step"], r["train_loss"], r["lr"]) for r in first.step_history] == [
        (r["step"], r["train_loss"], r["lr"]) for r in second.step_history
    ]
    assert first.epoch_history == second.epoch_history
    a = load_file(str(Path(first.model_dir) / "model.safetensors"))
    b = load_file(str(Path(second.model_dir) / "model.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)
