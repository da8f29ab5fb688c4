"""The training inputs of one rank: checked datasets, the batch sampler, the step count
and the fingerprint that ties checkpoints to the data and starting weights."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from distillery.ml.data.batches import (
    TEACHER_COLUMN,
    TEACHER_POOLED_COLUMN,
    BucketedDistributedBatchSampler,
    TokenDataset,
)
from distillery.ml.models.modeling import WEIGHTS_FILE
from distillery.ml.train.config import TrainConfig


def _subsample(frame: pd.DataFrame, n: int | None, seed: int) -> pd.DataFrame:
    """Keep ``n`` rows drawn with ``seed``, in their original order."""
    if n is None or n >= len(frame):
        return frame
    keep = np.sort(np.random.default_rng(seed).choice(len(frame), n, replace=False))
    return frame.iloc[keep]


def _check_data(
    train_set: TokenDataset, val_set: TokenDataset, labels: list[str], max_length: int
) -> None:
    for name, data in (("train", train_set), ("validation", val_set)):
        if len(data) == 0:
            raise ValueError(f"the {name} frame is empty")
        if data.lengths.max() > max_length:
            raise ValueError(
                f"{name} has rows of {data.lengths.max()} tokens, over max_length "
                f"{max_length}; truncate when tokenizing"
            )
        if data.labels.min() < 0 or data.labels.max() >= len(labels):
            raise ValueError(f"{name} labels must be in [0, {len(labels)})")
    teacher = train_set.teacher_logits
    if teacher is not None and teacher.shape[1] != len(labels):
        raise ValueError(
            f"teacher_logits have {teacher.shape[1]} classes, labels {len(labels)}"
        )


def _data_fingerprint(
    train_set: TokenDataset,
    val_set: TokenDataset,
    labels: list[str],
    init_model_dir: str | None,
) -> str:
    digest = hashlib.sha256()
    for part in (train_set.fingerprint(), val_set.fingerprint(), "\x1f".join(labels)):
        digest.update(part.encode())
        digest.update(b"|")
    if init_model_dir is not None:
        # The starting weights decide the result as much as the data do.
        with open(Path(init_model_dir) / WEIGHTS_FILE, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass
class TrainingData:
    """The datasets and the sampler that deals each rank its share of every batch."""

    train_set: TokenDataset
    val_set: TokenDataset
    sampler: BucketedDistributedBatchSampler
    fingerprint: str
    total_steps: int

    @property
    def steps_per_epoch(self) -> int:
        """Optimizer steps in one pass over the training set."""
        return len(self.sampler)


def prepare_data(
    config: TrainConfig,
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    labels: list[str],
    init_model_dir: str | None,
    rank: int,
    world_size: int,
) -> TrainingData:
    """Build and check this rank's datasets and sampler.

    Raises:
        ValueError: On data that break the contract (see ``run_training``).
    """
    kd = config.loss == "kd"
    if kd and TEACHER_COLUMN not in train_df.columns:
        raise ValueError(f"loss='kd' needs a {TEACHER_COLUMN!r} column in train_df")
    if config.kd_hidden_weight > 0:
        if TEACHER_POOLED_COLUMN not in train_df.columns:
            raise ValueError(
                f"kd_hidden_weight > 0 needs a {TEACHER_POOLED_COLUMN!r} column in "
                "train_df"
            )
    elif TEACHER_POOLED_COLUMN in train_df.columns:
        train_df = train_df.drop(columns=[TEACHER_POOLED_COLUMN])
    train_set = TokenDataset(
        _subsample(train_df, config.max_train_samples, config.seed), with_teacher=kd
    )
    val_set = TokenDataset(val_df)
    _check_data(train_set, val_set, labels, config.max_length)
    sampler = BucketedDistributedBatchSampler(
        train_set.lengths,
        config.batch_size,
        num_replicas=world_size,
        rank=rank,
        seed=config.seed,
        bucket_multiplier=config.bucket_multiplier,
    )
    total_steps = len(sampler) * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    return TrainingData(
        train_set,
        val_set,
        sampler,
        _data_fingerprint(train_set, val_set, labels, init_model_dir),
        total_steps,
    )
