"""The training library end to end: config checks, sampler, loop, resume and DDP."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from distillery.ml.compress.distill import compute_logits, compute_logits_and_pooled
from distillery.ml.data.batches import (
    BucketedDistributedBatchSampler,
    PadCollator,
    TokenDataset,
    shard_by_length,
)
from distillery.ml.metrics import classification_metrics
from distillery.ml.models.modeling import WEIGHTS_FILE, TextClassifier
from distillery.ml.train.config import TrainConfig, TrainingFailedError, TrainResult
from distillery.ml.train.launch import launch_training
from distillery.ml.train.strategies import cpu_has_native_bf16, resolve_precision

if TYPE_CHECKING:
    from conftest import Splits


def _weights(result: TrainResult) -> dict[str, torch.Tensor]:
    return load_file(str(Path(result.model_dir) / WEIGHTS_FILE))


def _last_checkpoint(config: TrainConfig) -> Path:
    """The newest step folder: the last step's weights, whichever epoch was best."""
    return sorted(Path(config.checkpoint_dir).glob("run-*/step-*"))[-1]


# ------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"learning_rate": -1e-3}, "learning_rate must be > 0"),
        ({"batch_size": 6, "nproc": 4}, "divisible by nproc"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"device": "tpu"}, "device must be one of"),
        ({"loss": "mse"}, "loss must be one of"),
        ({"epochs": True}, "epochs must be int"),
        ({"max_steps": "10"}, "max_steps must be int | None"),
        ({"nnodes": 2}, "rdzv_endpoint is required"),
        ({"nproc": 0}, "nproc must be >= 1"),
        ({"grad_accum_steps": 0}, "grad_accum_steps must be >= 1"),
        ({"fail_rank": 3, "nproc": 2}, "fail_rank must be a valid rank"),
        ({"max_restarts": -1}, "max_restarts must be >= 0"),
        ({"precision": "fp16"}, "precision must be one of"),
    ],
)
def test_config_rejects_bad_values(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrainConfig(**changes)


def test_config_from_dict_rejects_unknown_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown TrainConfig keys \['lr'\]"):
        TrainConfig.from_dict({"lr": 1e-3})


def test_config_round_trips_through_a_dict() -> None:
    config = TrainConfig(learning_rate=1e-4, nproc=2, max_steps=10)
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert "nproc" not in config.hashed_fields()
    assert "learning_rate" in config.hashed_fields()


# ------------------------------------------------------------- data, metrics


def test_collator_pads_each_batch_to_its_longest_row() -> None:
    frame = pd.DataFrame(
        {
            "input_ids": [[2, 11, 3], [2, 3]],
            "attention_mask": [[1, 1, 1], [1, 1]],
            "label": [1, 0],
            "teacher_logits": [[0.1, 0.9], [0.8, 0.2]],
        }
    )
    data = TokenDataset(frame, with_teacher=True)
    batch = PadCollator(pad_id=9)([data[0], data[1]])
    assert batch["input_ids"].tolist() == [[2, 11, 3], [2, 3, 9]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [1, 0]
    assert batch["teacher_logits"].shape == (2, 2)
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.long


def test_dataset_rejects_a_mask_of_another_length() -> None:
    frame = pd.DataFrame(
        {"input_ids": [[2, 11, 3]], "attention_mask": [[1, 1]], "label": [0]}
    )
    with pytest.raises(ValueError, match="row 0"):
        TokenDataset(frame)


def test_ranks_split_each_global_batch_of_the_single_rank_run() -> None:
    lengths = np.random.default_rng(0).integers(3, 40, size=37)
    single = BucketedDistributedBatchSampler(lengths, 8, seed=3, bucket_multiplier=2)
    ranks = [
        BucketedDistributedBatchSampler(
            lengths, 8, num_replicas=2, rank=r, seed=3, bucket_multiplier=2
        )
        for r in range(2)
    ]
    for epoch in (0, 1):
        for sampler in (single, *ranks):
            sampler.set_epoch(epoch)
        global_batches = list(single)
        per_rank = [list(s) for s in ranks]
        # ceil(37 / 8) steps on every rank; the last batch is filled by repetition.
        assert len(global_batches) == len(per_rank[0]) == len(per_rank[1]) == 5
        for step, batch in enumerate(global_batches):
            assert len(per_rank[0][step]) == len(per_rank[1][step]) == 4
            assert sorted(per_rank[0][step] + per_rank[1][step]) == sorted(batch)
        seen = [i for batch in global_batches for i in batch]
        assert set(seen) == set(range(37))


def test_sampler_is_deterministic_per_epoch_and_resumes_mid_epoch() -> None:
    lengths = np.arange(64) % 17 + 3
    sampler = BucketedDistributedBatchSampler(lengths, 8, seed=5, bucket_multiplier=4)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert second != first
    sampler.set_epoch(0, start_batch=3)
    assert list(sampler) == first[3:]


def test_bucketing_cuts_padding() -> None:
    lengths = np.random.default_rng(1).integers(3, 60, size=256)

    def padded_tokens(multiplier: int) -> int:
        sampler = BucketedDistributedBatchSampler(
            lengths, 16, seed=0, bucket_multiplier=multiplier
        )
        return sum(len(b) * lengths[b].max() for b in sampler)

    assert padded_tokens(8) < 0.8 * padded_tokens(1)


def test_sampler_rejects_a_batch_the_ranks_cannot_share() -> None:
    with pytest.raises(ValueError, match="not divisible"):
        BucketedDistributedBatchSampler([3, 4, 5], 5, num_replicas=2, rank=0)


def test_eval_shards_cover_every_example_once() -> None:
    lengths = np.arange(11)
    shards = [shard_by_length(lengths, 3, 2, r) for r in range(2)]
    flat = [i for shard in shards for batch in shard for i in batch]
    assert sorted(flat) == list(range(11))


def test_classification_metrics_match_hand_counts() -> None:
    scores = classification_metrics([0, 0, 1, 2], [0, 1, 1, 1], ["a", "b", "c"])
    assert scores["accuracy"] == pytest.approx(0.5)
    # f1: a = 2/3, b = 2/3 (p 1/3... recall 1), c = 0.
    assert scores["per_class"]["a"] == {
        "precision": 1.0,
        "recall": 0.5,
        "f1": pytest.approx(2 / 3),
        "support": 2,
    }
    assert scores["per_class"]["b"]["precision"] == pytest.approx(1 / 3)
    assert scores["per_class"]["c"]["f1"] == 0.0
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)


# -------------------------------------------------------------- in-process loop


def test_single_process_training_learns_the_labels(
    base_config: TrainConfig,
    splits: Splits,
    tmp_path: Path,
) -> None:
    result = launch_training(
        base_config, splits.train, splits.val, splits.labels, tmp_path / "out"
    )
    assert result.best_val_macro_f1 > 0.9
    assert [e["epoch"] for e in result.epoch_history] == [1, 2]
    assert len(result.step_history) == 16
    assert result.step_history[-1]["train_loss"] < result.step_history[0]["train_loss"]
    # Warm-up over ceil(0.1 * 16) = 2 steps, then linear decay towards 0.
    lrs = [s["lr"] for s in result.step_history]
    assert lrs[:3] == pytest.approx([1.5e-3, 3e-3, 3e-3 * 14 / 15])
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:], strict=False))
    assert lrs[-1] == pytest.approx(3e-3 / 15)
    assert result.resumed_from_step is None
    assert result.world_size == 1
    assert result.train_samples == 64
    assert (Path(result.model_dir) / WEIGHTS_FILE).is_file()


def test_auto_precision_is_bf16_on_cuda_and_on_cpus_with_native_bf16() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    native = "bf16" if cpu_has_native_bf16() else "fp32"
    assert resolve_precision("auto", cpu) == native
    assert resolve_precision("auto", cuda) == "bf16"
    assert resolve_precision("fp32", cuda) == "fp32"
    assert resolve_precision("bf16", cpu) == "bf16"  # asked for: emulated if need be
    # The default changes no checkpoint hash; a chosen precision does.
    assert "precision" not in TrainConfig().hashed_fields()
    assert TrainConfig(precision="bf16").hashed_fields()["precision"] == "bf16"


def test_bf16_autocast_learns_and_keeps_fp32_weights(
    base_config: TrainConfig, splits: Splits, tmp_path: Path
) -> None:
    runs = {
        name: launch_training(
            replace(base_config, precision=name, checkpoint_dir=str(tmp_path / name)),
            splits.train,
            splits.val,
            splits.labels,
            tmp_path / f"{name}-out",
        )
        for name in ("bf16", "fp32")
    }
    bf16, fp32 = runs["bf16"], runs["fp32"]
    assert (bf16.precision, fp32.precision) == ("bf16", "fp32")
    assert bf16.best_val_macro_f1 > 0.9
    assert all(t.dtype == torch.float32 for t in _weights(bf16).values())
    # The forward passes ran in bf16: the same first batch, a slightly other loss.
    first_bf16 = bf16.step_history[0]["train_loss"]
    first_fp32 = fp32.step_history[0]["train_loss"]
    assert first_bf16 != first_fp32
    assert first_bf16 == pytest.approx(first_fp32, rel=0.05)


def test_gradient_accumulation_matches_one_big_batch(
    base_config: TrainConfig, splits: Splits, tmp_path: Path
) -> None:
    whole = launch_training(
        replace(base_config, checkpoint_dir=str(tmp_path / "c1")),
        splits.train,
        splits.val,
        splits.labels,
        tmp_path / "whole",
    )
    accumulated = launch_training(
        replace(base_config, grad_accum_steps=4, checkpoint_dir=str(tmp_path / "c4")),
        splits.train,
        splits.val,
        splits.labels,
        tmp_path / "accumulated",
    )
    expected, got = _weights(whole), _weights(accumulated)
    for name, tensor in expected.items():
        assert torch.allclose(tensor, got[name], atol=1e-5), name


def test_frozen_embeddings_stay_put(
    base_config: TrainConfig, splits: Splits, tmp_path: Path
) -> None:
    frozen = replace(base_config, freeze_embeddings=True, epochs=1)
    result = launch_training(
        frozen, splits.train, splits.val, splits.labels, tmp_path / "out"
    )
    initial = load_file(str(Path(base_config.model_name_or_path) / "model.safetensors"))
    trained = _weights(result)
    for name in ("word_embeddings", "position_embeddings", "LayerNorm"):
        key = next(k for k in initial if k.startswith(f"embeddings.{name}"))
        assert torch.equal(initial[key], trained[f"encoder.{key}"]), key
    layer = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(initial[layer], trained[f"encoder.{layer}"])


@pytest.fixture
def initial_model(base_config: TrainConfig, splits: Splits, tmp_path: Path) -> str:
    """The folder of a model trained for one epoch: where distillation starts."""
    first = replace(base_config, epochs=1, checkpoint_dir=str(tmp_path / "c1"))
    return launch_training(
        first, splits.train, splits.val, splits.labels, tmp_path / "start"
    ).model_dir


def test_kd_loss_distils_from_an_initial_model(
    base_config: TrainConfig,
    splits: Splits,
    tmp_path: Path,
    initial_model: str,
) -> None:
    kd = replace(
        base_config, loss="kd", kd_alpha=0.7, kd_temperature=2.0, max_train_samples=32
    )
    result = launch_training(
        kd,
        splits.train,
        splits.val,
        splits.labels,
        tmp_path / "kd",
        init_model_dir=initial_model,
    )
    assert result.train_samples == 32
    assert len(result.step_history) == 8  # 4 steps per epoch on 32 rows
    assert result.best_val_macro_f1 > 0.9
    with pytest.raises(ValueError, match="teacher_logits"):
        launch_training(
            kd,
            splits.train.drop(columns="teacher_logits"),
            splits.val,
            splits.labels,
            tmp_path / "x",
        )
    with pytest.raises(ValueError, match="was trained for labels"):
        launch_training(
            replace(base_config, epochs=1),
            splits.train,
            splits.val,
            ["x", "y", "z"],
            tmp_path / "y",
            init_model_dir=initial_model,
        )


def test_kd_hidden_weight_adds_a_representation_term(
    base_config: TrainConfig,
    splits: Splits,
    tmp_path: Path,
    initial_model: str,
) -> None:
    teacher = TextClassifier.load(initial_model)
    logits, pooled = compute_logits_and_pooled(teacher, splits.train)
    np.testing.assert_allclose(
        logits, compute_logits(teacher, splits.train), atol=1e-5, rtol=0
    )
    train = splits.train.assign(
        teacher_logits=list(logits), teacher_pooled=list(pooled)
    )
    kd = replace(base_config, loss="kd", kd_alpha=0.7, max_train_samples=32, epochs=1)
    runs = {
        weight: launch_training(
            replace(
                kd, kd_hidden_weight=weight, checkpoint_dir=str(tmp_path / f"k{weight}")
            ),
            train,
            splits.val,
            splits.labels,
            tmp_path / f"kd{weight}",
            init_model_dir=initial_model,
        )
        for weight in (0.0, 1.0)
    }

    # The same first batch, from the same weights: the term is added on top.
    plain, hidden = (runs[w].step_history[0]["train_loss"] for w in (0.0, 1.0))
    assert 0.0 < hidden - plain < 2.0
    assert runs[1.0].best_val_macro_f1 > 0.9
    # The projection trains with the student but is not part of it.
    saved = _weights(runs[1.0])
    assert not [k for k in saved if k.startswith("projection.")]
    assert set(saved) == set(_weights(runs[0.0]))
    with pytest.raises(ValueError, match="teacher_pooled"):
        launch_training(
            replace(kd, kd_hidden_weight=1.0),
            splits.train,
            splits.val,
            splits.labels,
            tmp_path / "x",
        )
    with pytest.raises(ValueError, match="kd_hidden_weight needs loss kd"):
        replace(base_config, kd_hidden_weight=1.0)


def test_early_stopping_keeps_the_best_epoch(
    base_config: TrainConfig,
    splits: Splits,
    tmp_path: Path,
) -> None:
    # A learning rate this small cannot improve macro-F1 after the first epoch.
    stalled = replace(base_config, learning_rate=1e-9, epochs=5, patience=1)
    result = launch_training(
        stalled, splits.train, splits.val, splits.labels, tmp_path / "out"
    )
    assert result.stopped_early
    assert len(result.epoch_history) == 2
    assert result.best_epoch == 1


def test_rows_over_max_length_are_refused(
    base_config: TrainConfig,
    make_frame: Callable[..., pd.DataFrame],
    splits: Splits,
    tmp_path: Path,
) -> None:
    short = replace(base_config, max_length=8)
    with pytest.raises(ValueError, match="over max_length 8"):
        launch_training(
            short, make_frame(16, seed=3), splits.val, splits.labels, tmp_path
        )


def test_resume_after_a_crash_matches_an_uninterrupted_run(
    base_config: TrainConfig,
    splits: Splits,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Dropout on, so that the restored RNG streams matter too.
    config = replace(base_config, dropout=0.1, max_steps=12, checkpoint_every_steps=3)
    clean_config = replace(config, checkpoint_dir=str(tmp_path / "clean_ckpt"))
    clean = launch_training(
        clean_config, splits.train, splits.val, splits.labels, tmp_path / "clean"
    )
    # Checkpoints at 3, 6, 8 (epoch end), 9; the crash after step 11 loses 10-11.
    crashing = replace(config, fail_at_step=11)
    with pytest.raises(RuntimeError, match="injected fault on rank 0 after step 11"):
        launch_training(
            crashing, splits.train, splits.val, splits.labels, tmp_path / "resumed"
        )
    with caplog.at_level(logging.INFO, logger="distillery.ml.train.loop"):
        resumed = launch_training(
            config, splits.train, splits.val, splits.labels, tmp_path / "resumed"
        )
    assert resumed.resumed_from_step == 9
    assert "Resuming from checkpoint step 9" in caplog.text

    def trace(result: TrainResult) -> list[tuple[int, float, float]]:
        return [(s["step"], s["train_loss"], s["lr"]) for s in result.step_history]

    # Steps 10-12 ran on restored weights, optimizer, schedule, sampler and RNG.
    assert trace(resumed) == trace(clean)
    assert resumed.epoch_history == clean.epoch_history
    for clean_dir, resumed_dir in [
        (clean.model_dir, resumed.model_dir),
        (_last_checkpoint(clean_config), _last_checkpoint(config)),
    ]:
        expected = load_file(str(Path(clean_dir) / WEIGHTS_FILE))
        got = load_file(str(Path(resumed_dir) / WEIGHTS_FILE))
        assert expected.keys() == got.keys()
        for name, tensor in expected.items():
            assert torch.equal(tensor, got[name]), name

    # A finished run resumes at its end and trains nothing more.
    again = launch_training(
        config, splits.train, splits.val, splits.labels, tmp_path / "resumed"
    )
    assert again.resumed_from_step == 12
    assert trace(again) == trace(clean)


def test_a_changed_config_starts_fresh(
    base_config: TrainConfig,
    splits: Splits,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = replace(base_config, epochs=1)
    first = launch_training(config, splits.train, splits.val, splits.labels, tmp_path)
    changed = replace(config, learning_rate=2e-3)
    with caplog.at_level(logging.INFO, logger="distillery.ml.train.loop"):
        fresh = launch_training(
            changed, splits.train, splits.val, splits.labels, tmp_path
        )
    assert fresh.resumed_from_step is None
    assert "learning_rate: 0.003 -> 0.002" in caplog.text
    assert len(fresh.step_history) == len(first.step_history) == 8
    assert fresh.step_history[1]["train_loss"] != first.step_history[1]["train_loss"]


# ------------------------------------------------------------ multi-process


@pytest.mark.slow
def test_two_ranks_match_one_rank(
    base_config: TrainConfig,
    splits: Splits,
    tmp_path: Path,
) -> None:
    one = launch_training(
        replace(base_config, checkpoint_dir=str(tmp_path / "c1")),
        splits.train,
        splits.val,
        splits.labels,
        tmp_path / "one",
    )
    two = launch_training(
        replace(base_config, nproc=2, checkpoint_dir=str(tmp_path / "c2")),
        splits.train,
        splits.val,
        splits.labels,
        tmp_path / "two",
    )
    assert two.world_size == 2
    assert two.best_epoch == one.best_epoch
    assert [e["val_macro_f1"] for e in two.epoch_history] == [
        e["val_macro_f1"] for e in one.epoch_history
    ]
    assert [e["val_loss"] for e in two.epoch_history] == pytest.approx(
        [e["val_loss"] for e in one.epoch_history], abs=1e-5
    )
    losses_one = [s["train_loss"] for s in one.step_history]
    losses_two = [s["train_loss"] for s in two.step_history]
    assert losses_two == pytest.approx(losses_one, abs=1e-5)
    weights_one, weights_two = _weights(one), _weights(two)
    for name, tensor in weights_one.items():
        assert torch.allclose(tensor, weights_two[name], atol=1e-5), name


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_failing_rank_fails_the_launch(
    base_config: TrainConfig,
    splits: Splits,
    tmp_path: Path,
) -> None:
    # No restart: a restarted group would resume past the injected step and succeed.
    faulty = replace(base_config, nproc=2, fail_at_step=2, fail_rank=1, max_restarts=0)
    started = time.monotonic()
    with pytest.raises(TrainingFailedError, match="rank 1") as failure:
        launch_training(
            faulty, splits.train, splits.val, splits.labels, tmp_path / "out"
        )
    assert "injected fault on rank 1 after step 2" in str(failure.value)
    # Rank 0 blocks in an all-reduce; the launcher must not wait for it.
    assert time.monotonic() - started < 60
    # No rank outlives the failed launch.
    assert _live_children() == []


def _live_children() -> list[int]:
    """Live children of this process, but multiprocessing's resource tracker.

    The tracker is one helper per parent process for its whole life, not a rank.
    """
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        if (
            int(fields[1]) == os.getpid()
            and fields[0] != "Z"
            and b"resource_tracker" not in cmdline
        ):
            children.append(int(stat.parent.name))
    return children
