"""Fine-tuning and distillation loop for :class:`TextClassifier` on one or many ranks.

``launch_training`` is the entry point for callers (a Kedro node): with one process it
runs the loop in-process, otherwise it starts the ranks with torch elastic and returns
rank 0's :class:`TrainResult`. ``run_training`` is the per-rank loop, in nanoGPT's
style: rank from the environment, ``master_process = rank == 0``, and only rank 0
logs, checkpoints and writes files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import random
import shutil
import socket
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import (
    ChildFailedError,
    ProcessFailure,
)
from torch.distributed.launcher.api import LaunchConfig, elastic_launch
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from distillery.ml.checkpoint import (
    CheckpointManager,
    capture_rng_state,
    config_hash,
    restore_rng_state,
)
from distillery.ml.data import (
    TEACHER_COLUMN,
    BucketedDistributedBatchSampler,
    PadCollator,
    TokenDataset,
    shard_by_length,
)
from distillery.ml.losses import kd_loss
from distillery.ml.metrics import classification_metrics
from distillery.ml.modeling import WEIGHTS_FILE, TextClassifier

logger = logging.getLogger(__name__)

_DEVICES = ("auto", "cpu", "cuda")
_LOSSES = ("ce", "kd")
# Fields that do not change the trained weights stay out of the checkpoint hash, so
# a run can resume with another world size, thread count or checkpoint cadence.
_UNHASHED_FIELDS = frozenset(
    {
        "nproc",
        "nnodes",
        "rdzv_endpoint",
        "rdzv_backend",
        "rdzv_id",
        "checkpoint_dir",
        "checkpoint_every_steps",
        "num_threads",
        "eval_batch_size",
        "device",
        "log_every_steps",
        "fail_at_step",
        "fail_rank",
    }
)


class TrainingFailedError(RuntimeError):
    """A training rank failed; the message names the rank and its error."""


class RankZeroElsewhere(SystemExit):
    """Ends ``kedro run`` with exit status 0 on a machine that did not host rank 0.

    In a multi-node run every machine runs the same ``kedro run --pipeline train``, and
    the c10d rendezvous, not the order in which machines start, decides which machine
    hosts global rank 0. That machine saves the model and logs to MLflow. The others
    have trained their share but hold no result, and a Kedro node cannot finish
    without returning its declared outputs (the catalog would save them). So the node
    leaves the run instead: ``SystemExit`` is not an ``Exception``, so Kedro reports no
    failed node, the catalog saves nothing, and the process exits 0.
    """

    def __init__(self) -> None:
        super().__init__(0)


@dataclass(frozen=True)
class TrainConfig:
    """Everything the training loop needs besides data; checks itself on creation.

    Attributes:
        model_name_or_path: Pretrained encoder: ``builtin``, a local folder or hub id.
        max_length: Longest tokenized example allowed, in tokens (data is already
            truncated to it upstream; longer rows are an error).
        batch_size: Global examples per optimizer step, summed over ranks and
            accumulation micro-steps.
        grad_accum_steps: Micro-steps per optimizer step.
        learning_rate: Peak AdamW learning rate.
        weight_decay: AdamW decay for matrices; biases and norms get none.
        warmup_ratio: Share of optimizer steps spent in linear warm-up.
        max_grad_norm: Gradient clipping norm; None disables clipping.
        epochs: Passes over the training data.
        max_train_samples: Deterministic subsample (by ``seed``); None keeps all.
        max_steps: Cap on optimizer steps (also sets the LR schedule); None = none.
        dropout: Drop probability of every dropout layer (encoder and head).
        patience: Epochs without a better validation macro-F1 before stopping;
            None never stops early.
        seed: Seed for init, shuffling and dropout.
        nproc: Processes (ranks) per node.
        nnodes: Nodes.
        rdzv_endpoint: ``host:port`` of the rendezvous; None picks a free local port
            (single node only).
        rdzv_backend: torch elastic rendezvous backend.
        rdzv_id: Rendezvous run id shared by all nodes; None draws one (single node).
        checkpoint_dir: Checkpoint folder; None means ``<output_dir>/checkpoints``.
        checkpoint_every_steps: Optimizer steps between checkpoints (epoch ends are
            always checkpointed); None checkpoints at epoch ends only.
        freeze_embeddings: Keep the encoder's embedding module fixed.
        freeze_layers: Keep the encoder's first N transformer blocks fixed too (with
            the embeddings frozen, nothing below them needs a backward pass).
        num_threads: Torch CPU threads per rank; None = cores / nproc.
        bucket_multiplier: Batches per length-sorting chunk.
        eval_batch_size: Validation examples per forward pass per rank.
        device: ``auto``, ``cpu`` or ``cuda``.
        loss: ``ce`` (labels) or ``kd`` (needs ``teacher_logits`` in the frame).
        kd_alpha: Weight of the distillation term for ``kd``.
        kd_temperature: Softmax temperature for ``kd``.
        log_every_steps: Optimizer steps between log lines on rank 0.
        pad_token_id: Token id used to pad batches.
        fail_at_step: Fault injection for reliability tests: rank ``fail_rank``
            raises right after this optimizer step (and its checkpoint, if due).
            None in real runs.
        fail_rank: The rank that ``fail_at_step`` fails.
    """

    model_name_or_path: str = "builtin"
    max_length: int = 128
    batch_size: int = 32
    grad_accum_steps: int = 1
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float | None = 1.0
    epochs: int = 3
    max_train_samples: int | None = None
    max_steps: int | None = None
    dropout: float = 0.1
    patience: int | None = 2
    seed: int = 42
    nproc: int = 1
    nnodes: int = 1
    rdzv_endpoint: str | None = None
    rdzv_backend: str = "c10d"
    rdzv_id: str | None = None
    checkpoint_dir: str | None = None
    checkpoint_every_steps: int | None = 500
    freeze_embeddings: bool = False
    freeze_layers: int = 0
    num_threads: int | None = None
    bucket_multiplier: int = 50
    eval_batch_size: int = 64
    device: str = "auto"
    loss: str = "ce"
    kd_alpha: float = 0.5
    kd_temperature: float = 2.0
    log_every_steps: int = 50
    pad_token_id: int = 0
    fail_at_step: int | None = None
    fail_rank: int = 0

    def __post_init__(self) -> None:
        errors = self._type_errors()
        if errors:
            raise ValueError("invalid TrainConfig: " + "; ".join(errors))
        checks: list[tuple[bool, str]] = [
            (bool(self.model_name_or_path), "model_name_or_path must be non-empty"),
            (self.max_length >= 2, "max_length must be >= 2"),
            (self.batch_size >= 1, "batch_size must be >= 1"),
            (self.grad_accum_steps >= 1, "grad_accum_steps must be >= 1"),
            (self.learning_rate > 0, "learning_rate must be > 0"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 <= self.warmup_ratio < 1, "warmup_ratio must be in [0, 1)"),
            (
                self.max_grad_norm is None or self.max_grad_norm > 0,
                "max_grad_norm must be > 0 or null",
            ),
            (self.epochs >= 1, "epochs must be >= 1"),
            (
                self.max_train_samples is None or self.max_train_samples >= 1,
                "max_train_samples must be >= 1 or null",
            ),
            (self.max_steps is None or self.max_steps >= 1, "max_steps must be >= 1"),
            (0 <= self.dropout < 1, "dropout must be in [0, 1)"),
            (self.patience is None or self.patience >= 1, "patience must be >= 1"),
            (self.seed >= 0, "seed must be >= 0"),
            (self.nproc >= 1, "nproc must be >= 1"),
            (self.nnodes >= 1, "nnodes must be >= 1"),
            (bool(self.rdzv_backend), "rdzv_backend must be non-empty"),
            (
                self.nnodes == 1 or bool(self.rdzv_endpoint),
                "rdzv_endpoint is required when nnodes > 1",
            ),
            (
                self.nnodes == 1 or bool(self.rdzv_id),
                "rdzv_id is required when nnodes > 1 (all nodes must share it)",
            ),
            (
                self.checkpoint_every_steps is None or self.checkpoint_every_steps >= 1,
                "checkpoint_every_steps must be >= 1 or null",
            ),
            (
                self.num_threads is None or self.num_threads >= 1,
                "num_threads must be >= 1",
            ),
            (self.freeze_layers >= 0, "freeze_layers must be >= 0"),
            (self.bucket_multiplier >= 1, "bucket_multiplier must be >= 1"),
            (self.eval_batch_size >= 1, "eval_batch_size must be >= 1"),
            (self.device in _DEVICES, f"device must be one of {_DEVICES}"),
            (self.loss in _LOSSES, f"loss must be one of {_LOSSES}"),
            (0 <= self.kd_alpha <= 1, "kd_alpha must be in [0, 1]"),
            (self.kd_temperature > 0, "kd_temperature must be > 0"),
            (self.log_every_steps >= 1, "log_every_steps must be >= 1"),
            (self.pad_token_id >= 0, "pad_token_id must be >= 0"),
            (
                self.fail_at_step is None or self.fail_at_step >= 1,
                "fail_at_step must be >= 1 or null",
            ),
            (0 <= self.fail_rank < self.world_size, "fail_rank must be a valid rank"),
        ]
        errors = [message for ok, message in checks if not ok]
        shards = self.world_size * self.grad_accum_steps
        if self.batch_size % shards:
            errors.append(
                f"batch_size {self.batch_size} must be divisible by nproc * nnodes * "
                f"grad_accum_steps = {shards}"
            )
        if errors:
            raise ValueError("invalid TrainConfig: " + "; ".join(errors))

    def _type_errors(self) -> list[str]:
        """Check field types, since YAML parameters arrive untyped."""
        errors = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            allowed = {
                "str": (str,),
                "int": (int,),
                "float": (int, float),
                "bool": (bool,),
            }
            base, _, optional = f.type.partition(" | ")
            if value is None and optional == "None":
                continue
            # bool is an int subclass; a YAML `true` must not pass as a count.
            if isinstance(value, bool) and base != "bool":
                errors.append(f"{f.name} must be {base}, got {value!r}")
            elif not isinstance(value, allowed[base]):
                errors.append(f"{f.name} must be {f.type}, got {value!r}")
        return errors

    @property
    def world_size(self) -> int:
        """Total ranks."""
        return self.nproc * self.nnodes

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build a config from parameters, refusing keys it does not know.

        Raises:
            ValueError: On unknown keys or invalid values.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(
                f"unknown TrainConfig keys {unknown}; known keys: {sorted(known)}"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (picklable, YAML/JSON friendly)."""
        return dataclasses.asdict(self)

    def hashed_fields(self) -> dict[str, Any]:
        """The fields that change the trained weights."""
        return {k: v for k, v in self.to_dict().items() if k not in _UNHASHED_FIELDS}


@dataclass
class TrainResult:
    """What rank 0 returns; plain types only so it pickles across processes.

    Attributes:
        model_dir: Folder with the best validation epoch's weights
            (:meth:`TextClassifier.save` format).
        step_history: Per optimizer step: ``step``, ``train_loss``, ``lr``,
            ``samples_per_s`` (global).
        epoch_history: Per epoch (numbered from 1): ``epoch``, ``step``,
            ``val_loss``, ``val_accuracy``, ``val_macro_f1``.
        best_epoch: Epoch whose weights are in ``model_dir``.
        best_val_macro_f1: Its validation macro-F1.
        resumed_from_step: Step of the checkpoint this run resumed from, or None.
        samples_per_s: Global training throughput of this run (samples per
            second, validation and checkpoint time included).
        wall_s: Wall time of the loop on rank 0, in seconds.
        train_samples: Training examples after subsampling.
        world_size: Ranks that trained.
        stopped_early: Whether patience ran out.
    """

    model_dir: str
    step_history: list[dict[str, float]]
    epoch_history: list[dict[str, float]]
    best_epoch: int
    best_val_macro_f1: float
    resumed_from_step: int | None
    samples_per_s: float
    wall_s: float
    train_samples: int
    world_size: int
    stopped_early: bool


@dataclass
class _Progress:
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


# --------------------------------------------------------------------------- setup


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _resolve_device(name: str, local_rank: int) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


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


def _build_model(
    config: TrainConfig, labels: list[str], init_model_dir: str | None
) -> TextClassifier:
    """The model factory: a saved classifier if given, else a pretrained encoder."""
    if init_model_dir is not None:
        model = TextClassifier.load(init_model_dir)
        if model.labels != list(labels):
            raise ValueError(
                f"{init_model_dir} was trained for labels {model.labels}, not {labels}"
            )
    else:
        model = TextClassifier.from_pretrained_encoder(
            config.model_name_or_path, labels, config.dropout
        )
    model.set_dropout(config.dropout)
    max_positions = getattr(model.config, "max_position_embeddings", None)
    if max_positions is not None and config.max_length > max_positions:
        raise ValueError(
            f"max_length {config.max_length} exceeds the encoder's "
            f"{max_positions} positions"
        )
    if config.freeze_embeddings:
        embeddings = getattr(model.encoder, "embeddings", None)
        (embeddings or model.encoder.get_input_embeddings()).requires_grad_(False)
    if config.freeze_layers:
        blocks = transformer_blocks(model.encoder)
        if config.freeze_layers >= len(blocks):
            raise ValueError(
                f"freeze_layers {config.freeze_layers} leaves none of the encoder's "
                f"{len(blocks)} blocks to train"
            )
        for block in blocks[: config.freeze_layers]:
            block.requires_grad_(False)
    return model.train()


def transformer_blocks(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's stack of transformer blocks, whatever the architecture names it.

    Raises:
        ValueError: If no ``ModuleList`` of ``num_hidden_layers`` modules exists.
    """
    count = encoder.config.num_hidden_layers
    for module in encoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            return module
    raise ValueError(f"no list of {count} transformer blocks in {type(encoder)}")


def _build_optimizer(
    model: nn.Module, learning_rate: float, weight_decay: float
) -> torch.optim.AdamW:
    """AdamW that decays matrices only; biases and LayerNorm weights are 1-D."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=learning_rate)


def _linear_warmup_decay(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor for optimizer step ``n = index + 1``: up to 1 at ``n = warmup``,
    then down linearly to 0 one step after the last, so no step runs at lr 0."""

    def factor(index: int) -> float:
        n = index + 1
        if n <= warmup_steps:
            return n / warmup_steps
        return max(0.0, (total_steps - n + 1) / (total_steps - warmup_steps + 1))

    return factor


def _broadcast(obj: Any, ddp: bool) -> Any:
    """Send rank 0's python object to every rank."""
    if not ddp:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


# ------------------------------------------------------------------ loop pieces


def _compute_loss(
    config: TrainConfig, logits: torch.Tensor, batch: dict[str, torch.Tensor]
) -> torch.Tensor:
    logits = logits.float()  # (b, C); losses in fp32 under bf16 autocast
    if config.loss == "kd":
        return kd_loss(
            logits,
            batch["teacher_logits"],
            batch["labels"],
            config.kd_alpha,
            config.kd_temperature,
        )
    return F.cross_entropy(logits, batch["labels"])


@torch.no_grad()
def _evaluate(
    raw_model: TextClassifier,
    val_set: TokenDataset,
    *,
    labels: list[str],
    config: TrainConfig,
    device: torch.device,
    rank: int,
    world_size: int,
) -> dict[str, float] | None:
    """Validation loss, accuracy and macro-F1 over all ranks' shards; rank 0 only.

    Each rank scores a disjoint shard; the logits are gathered and scored once on
    rank 0, so the numbers do not depend on the world size.
    """
    raw_model.eval()
    collate = PadCollator(config.pad_token_id)
    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else None
    indices: list[int] = []
    outputs: list[np.ndarray] = []
    for idx in shard_by_length(
        val_set.lengths, config.eval_batch_size, world_size, rank
    ):
        batch = collate([val_set[i] for i in idx])
        with autocast or nullcontext():
            logits = raw_model(
                batch["input_ids"].to(device), batch["attention_mask"].to(device)
            )  # (b, C)
        indices.extend(idx)
        outputs.append(logits.float().cpu().numpy())
    raw_model.train()
    local = (
        np.asarray(indices, dtype=np.int64),
        np.concatenate(outputs) if outputs else np.zeros((0, len(labels)), np.float32),
    )
    gathered: list[Any] = [local]
    if world_size > 1:
        gathered = [None] * world_size
        dist.all_gather_object(gathered, local)
    if rank != 0:
        return None
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


def _gather_rng_states(ddp: bool, world_size: int) -> list[dict[str, Any]]:
    """Every rank's RNG state, so a resume restores each rank's dropout stream."""
    state = capture_rng_state()
    if not ddp:
        return [state]
    gathered: list[Any] = [None] * world_size
    dist.all_gather_object(gathered, state)
    return gathered


def _checkpoint_state(
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    progress: _Progress,
    rng: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "progress": dataclasses.asdict(progress),
        "rng": rng,
    }


# ------------------------------------------------------------------- the loop


def run_training(
    config: TrainConfig,
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    labels: list[str],
    output_dir: str | Path,
    *,
    init_model_dir: str | None = None,
    env: Mapping[str, str] | None = None,
) -> TrainResult | None:
    """Train on this rank; rank 0 writes the final model and returns the result.

    Args:
        config: Training settings.
        train_df: Tokenized training rows (``input_ids``, ``attention_mask``,
            ``label`` and, for ``loss="kd"``, ``teacher_logits``).
        val_df: Tokenized validation rows.
        labels: Label vocabulary; ``label`` indexes it.
        output_dir: Folder for ``model/`` (and ``checkpoints/`` by default).
        init_model_dir: A :meth:`TextClassifier.save` folder to start from instead
            of the pretrained encoder (e.g. a student to distil into).
        env: Where to read ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``; defaults to
            ``os.environ`` (set by torch elastic).

    Returns:
        The result on rank 0, None on other ranks.

    Raises:
        ValueError: On data that break the contract or a model that does not fit.
    """
    env = os.environ if env is None else env
    rank = int(env.get("RANK", "0"))
    world_size = int(env.get("WORLD_SIZE", "1"))
    local_rank = int(env.get("LOCAL_RANK", "0"))
    ddp = world_size > 1
    device = _resolve_device(config.device, local_rank)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(
        config.num_threads or max(1, (os.cpu_count() or 1) // config.nproc)
    )
    if ddp:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        result = _train(
            config,
            train_df=train_df,
            val_df=val_df,
            labels=labels,
            output_dir=Path(output_dir),
            init_model_dir=init_model_dir,
            rank=rank,
            world_size=world_size,
            device=device,
        )
    finally:
        # In-process runs share the caller's thread pool; leave it as found.
        torch.set_num_threads(threads_before)
    # Not in `finally`: on an error, tearing the group down first would close the
    # peers' sockets before this rank records its error, and a peer's "connection
    # closed" would then pass for the root cause.
    if ddp:
        dist.destroy_process_group()
    return result


def _train(  # noqa: PLR0912, PLR0915 - one readable loop beats many small helpers
    config: TrainConfig,
    *,
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    labels: list[str],
    output_dir: Path,
    init_model_dir: str | None,
    rank: int,
    world_size: int,
    device: torch.device,
) -> TrainResult | None:
    t_start = time.perf_counter()
    ddp = world_size > 1
    master_process = rank == 0
    if world_size != config.world_size:
        raise ValueError(
            f"WORLD_SIZE {world_size} differs from nproc * nnodes = {config.world_size}"
        )

    # ---- data
    kd = config.loss == "kd"
    if kd and TEACHER_COLUMN not in train_df.columns:
        raise ValueError(f"loss='kd' needs a {TEACHER_COLUMN!r} column in train_df")
    train_set = TokenDataset(
        _subsample(train_df, config.max_train_samples, config.seed), with_teacher=kd
    )
    val_set = TokenDataset(val_df)
    _check_data(train_set, val_set, labels, config.max_length)
    fingerprint = _data_fingerprint(train_set, val_set, labels, init_model_dir)
    fields = config.hashed_fields()
    run_hash = config_hash(fields, fingerprint)
    sampler = BucketedDistributedBatchSampler(
        train_set.lengths,
        config.batch_size,
        num_replicas=world_size,
        rank=rank,
        seed=config.seed,
        bucket_multiplier=config.bucket_multiplier,
    )
    collate = PadCollator(config.pad_token_id)
    steps_per_epoch = len(sampler)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    warmup_steps = math.ceil(config.warmup_ratio * total_steps)

    # ---- model and optimizer; the same init on every rank, then per-rank dropout
    _seed_everything(config.seed)
    model = _build_model(config, labels, init_model_dir).to(device)
    _seed_everything(config.seed + rank)
    optimizer = _build_optimizer(model, config.learning_rate, config.weight_decay)
    scheduler = LambdaLR(optimizer, _linear_warmup_decay(warmup_steps, total_steps))

    # ---- resume: rank 0 reads, everyone receives (no shared filesystem needed)
    ckpt = CheckpointManager(
        config.checkpoint_dir or output_dir / "checkpoints",
        run_hash,
        fields,
        fingerprint,
    )
    payload = None
    if master_process:
        latest = ckpt.latest()
        if latest is not None:
            weights, state = ckpt.load(latest)
            payload = {"weights": weights, "state": state}
            logger.info(
                "Resuming from checkpoint step %d (%s, config hash %s)",
                latest.step,
                latest.path,
                run_hash[:16],
            )
        else:
            logger.info("%s", ckpt.explain_fresh_start())
    payload = _broadcast(payload, ddp)
    progress = _Progress()
    resumed_from_step = None
    if payload is not None:
        state = payload["state"]
        model.load_state_dict(payload["weights"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        progress = _Progress(**state["progress"])
        if rank < len(state["rng"]):
            restore_rng_state(state["rng"][rank])
        else:
            logger.warning("No RNG state saved for rank %d; reseeding", rank)
            _seed_everything(config.seed + rank + progress.step)
        resumed_from_step = progress.step
    del payload

    if ddp:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    raw_model = model.module if ddp else model
    autocast = torch.autocast("cuda", torch.bfloat16) if device.type == "cuda" else None

    # ---- train
    pbar = tqdm(
        total=total_steps,
        initial=progress.step,
        disable=not master_process,
        desc="train",
        dynamic_ncols=True,
        # Redrawn in place on a terminal; in logs (CI, Airflow) one line per 30 s.
        mininterval=0.1 if sys.stderr.isatty() else 30.0,
    )
    samples_this_run = 0
    t_train = time.perf_counter()
    try:
        while not progress.finished:
            sampler.set_epoch(progress.epoch, progress.batch_in_epoch)
            for indices in sampler:
                t_step = time.perf_counter()
                loss_sum = torch.zeros((), device=device)
                for micro_step in range(config.grad_accum_steps):
                    # Strided, so each micro-batch spans the (sorted) lengths alike,
                    # and padded on its own, to its longest row.
                    micro = collate(
                        [
                            train_set[i]
                            for i in indices[micro_step :: config.grad_accum_steps]
                        ]
                    )
                    micro = {k: v.to(device) for k, v in micro.items()}
                    last_micro = micro_step == config.grad_accum_steps - 1
                    # Gradients are all-reduced only on the last micro-step.
                    sync = nullcontext() if last_micro or not ddp else model.no_sync()
                    with sync:
                        with autocast or nullcontext():
                            logits = model(
                                micro["input_ids"], micro["attention_mask"]
                            )  # (b, C)
                        loss = _compute_loss(config, logits, micro)
                        (loss / config.grad_accum_steps).backward()
                    loss_sum += loss.detach()
                if config.max_grad_norm is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
                lr = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)

                train_loss = loss_sum / config.grad_accum_steps
                if ddp:
                    # The logged loss is the global batch's, whatever the world size.
                    dist.all_reduce(train_loss)
                    train_loss /= world_size
                progress.step += 1
                progress.batch_in_epoch += 1
                samples_this_run += config.batch_size
                samples_per_s = config.batch_size / (time.perf_counter() - t_step)
                record = {
                    "step": progress.step,
                    "train_loss": float(train_loss),
                    "lr": float(lr),
                    "samples_per_s": float(samples_per_s),
                }
                progress.step_history.append(record)
                pbar.update(1)
                pbar.set_postfix(
                    loss=f"{record['train_loss']:.4f}",
                    lr=f"{lr:.2e}",
                    samples_s=f"{samples_per_s:.0f}",
                    refresh=False,
                )
                if master_process and progress.step % config.log_every_steps == 0:
                    logger.info(
                        "step %d/%d loss %.4f lr %.3e %.1f samples/s",
                        progress.step,
                        total_steps,
                        record["train_loss"],
                        lr,
                        samples_per_s,
                    )

                epoch_done = progress.batch_in_epoch == steps_per_epoch
                run_done = progress.step >= total_steps
                every = config.checkpoint_every_steps
                # The epoch-end checkpoint covers a step that also ends the epoch.
                if (
                    every
                    and progress.step % every == 0
                    and not (epoch_done or run_done)
                ):
                    rng = _gather_rng_states(ddp, world_size)
                    if master_process:
                        ckpt.save(
                            raw_model,
                            _checkpoint_state(optimizer, scheduler, progress, rng),
                            progress.step,
                            progress.best_epoch,
                        )
                if progress.step == config.fail_at_step and rank == config.fail_rank:
                    raise RuntimeError(
                        f"injected fault on rank {rank} after step {progress.step} "
                        "(TrainConfig.fail_at_step)"
                    )
                if run_done:
                    break

            # ---- epoch end (or max_steps): validate, early-stop, checkpoint
            scores = _evaluate(
                raw_model,
                val_set,
                labels=labels,
                config=config,
                device=device,
                rank=rank,
                world_size=world_size,
            )
            if master_process:
                epoch = progress.epoch + 1
                progress.epoch_history.append(
                    {"epoch": epoch, "step": progress.step, **scores}
                )
                if scores["val_macro_f1"] > progress.best_val_macro_f1:
                    progress.best_val_macro_f1 = scores["val_macro_f1"]
                    progress.best_epoch = epoch
                    progress.bad_epochs = 0
                    ckpt.save_best(raw_model, epoch)
                else:
                    progress.bad_epochs += 1
                progress.stopped_early = (
                    config.patience is not None
                    and progress.bad_epochs >= config.patience
                )
                logger.info(
                    "epoch %d: val_loss %.4f val_accuracy %.4f val_macro_f1 %.4f "
                    "(best %.4f at epoch %s)",
                    epoch,
                    scores["val_loss"],
                    scores["val_accuracy"],
                    scores["val_macro_f1"],
                    progress.best_val_macro_f1,
                    progress.best_epoch,
                )
            # Rank 0 decides; every rank adopts its state so they stop together.
            progress = _broadcast(progress, ddp)
            progress.epoch += 1
            progress.batch_in_epoch = 0
            progress.finished = (
                progress.stopped_early
                or progress.step >= total_steps
                or progress.epoch >= config.epochs
            )
            rng = _gather_rng_states(ddp, world_size)
            if master_process:
                ckpt.save(
                    raw_model,
                    _checkpoint_state(optimizer, scheduler, progress, rng),
                    progress.step,
                    progress.best_epoch,
                )
            if progress.stopped_early:
                logger.info(
                    "Stopping early: no better val macro-F1 for %d epochs",
                    progress.bad_epochs,
                )
    finally:
        pbar.close()

    train_s = time.perf_counter() - t_train
    if not master_process:
        return None
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
    return TrainResult(
        model_dir=str(model_dir),
        step_history=progress.step_history,
        epoch_history=progress.epoch_history,
        best_epoch=int(progress.best_epoch),
        best_val_macro_f1=float(progress.best_val_macro_f1),
        resumed_from_step=resumed_from_step,
        samples_per_s=samples_this_run / train_s if samples_this_run else 0.0,
        wall_s=time.perf_counter() - t_start,
        train_samples=len(train_set),
        world_size=world_size,
        stopped_early=progress.stopped_early,
    )


# ------------------------------------------------------------------- launcher

_SINGLE_PROCESS_ENV = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
_TRANSPORT_COLUMNS = ("input_ids", "attention_mask", "label", TEACHER_COLUMN)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _describe_failures(err: ChildFailedError) -> str:
    """Name the failed ranks, root cause first.

    A rank that dies makes its peers fail in their next collective ("connection
    closed by peer"). Elastic orders failures by whole-second timestamps, which
    often ties; the error files' modification times tell the order reliably.
    """

    def written_at(item: tuple[int, ProcessFailure]) -> tuple[int, int]:
        _, failure = item
        try:
            return 0, os.stat(failure.error_file).st_mtime_ns
        except OSError:  # killed by a signal: no error file, so not the root cause
            return 1, failure.timestamp

    lines = []
    for rank, failure in sorted(err.failures.items(), key=written_at):
        message = failure.message
        if isinstance(message, dict):
            message = message.get("message", message)
        lines.append(f"rank {rank} (exit code {failure.exitcode}): {message}")
    return "training failed on " + "\nalso failed: ".join(lines)


def _rank_entrypoint(job: dict[str, Any]) -> TrainResult | None:
    """What each spawned rank runs: read the frames, train, return rank 0's result.

    Args:
        job: ``config`` (dict), ``data_dir``, ``labels``, ``output_dir``,
            ``init_model_dir`` and the launcher's ``log_level``; plain types only,
            since spawn pickles them.
    """
    rank = int(os.environ.get("RANK", "0"))
    if not logging.getLogger().handlers:
        # Only rank 0 reports progress; the others speak up for warnings only.
        level = (
            job["log_level"] if rank == 0 else max(job["log_level"], logging.WARNING)
        )
        logging.basicConfig(
            level=level,
            format=f"[rank {rank}] %(asctime)s %(name)s %(levelname)s %(message)s",
        )
    data_dir = Path(job["data_dir"])
    return run_training(
        TrainConfig.from_dict(job["config"]),
        pd.read_parquet(data_dir / "train.parquet"),
        pd.read_parquet(data_dir / "val.parquet"),
        job["labels"],
        job["output_dir"],
        init_model_dir=job["init_model_dir"],
    )


def launch_training(
    config: TrainConfig,
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    labels: list[str],
    output_dir: str | Path,
    *,
    init_model_dir: str | None = None,
) -> TrainResult | None:
    """Train on ``nproc * nnodes`` ranks and return rank 0's result.

    One process runs in-process. Otherwise the frames are written once to parquet
    under ``output_dir`` and torch elastic spawns the ranks on this node; with
    ``nnodes > 1`` every node calls this with the same config and data.

    Args:
        config: Training settings.
        train_df: Tokenized training rows (see :func:`run_training`).
        val_df: Tokenized validation rows.
        labels: Label vocabulary.
        output_dir: Folder for ``model/``, default checkpoints and transport files.
        init_model_dir: Saved classifier to start from instead of the pretrained
            encoder.

    Returns:
        Global rank 0's :class:`TrainResult` on the node that hosts it; None on the
        other nodes. torch elastic keys the results by global rank, and which node
        hosts rank 0 is the rendezvous' choice (c10d ignores any node rank).

    Raises:
        TrainingFailedError: If any rank fails; names the rank and its error.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    if config.world_size == 1:
        return run_training(
            config,
            train_df,
            val_df,
            labels,
            output_dir,
            init_model_dir=init_model_dir,
            env=_SINGLE_PROCESS_ENV,
        )

    # Ranks read parquet rather than receive pickled frames through spawn.
    data_dir = output_dir / f".launch-{uuid.uuid4().hex[:8]}"
    data_dir.mkdir()
    for name, frame in (("train", train_df), ("val", val_df)):
        columns = [c for c in _TRANSPORT_COLUMNS if c in frame.columns]
        frame[columns].reset_index(drop=True).to_parquet(data_dir / f"{name}.parquet")
    endpoint = config.rdzv_endpoint or f"127.0.0.1:{_free_port()}"
    launch_config = LaunchConfig(
        min_nodes=config.nnodes,
        max_nodes=config.nnodes,
        nproc_per_node=config.nproc,
        rdzv_backend=config.rdzv_backend,
        rdzv_endpoint=endpoint,
        run_id=config.rdzv_id or uuid.uuid4().hex,
        max_restarts=0,
        monitor_interval=0.5,
        start_method="spawn",
    )
    logger.info(
        "Launching %d x %d ranks (rendezvous %s at %s)",
        config.nnodes,
        config.nproc,
        config.rdzv_backend,
        endpoint,
    )
    try:
        job = {
            "config": config.to_dict(),
            "data_dir": str(data_dir),
            "labels": list(labels),
            "output_dir": str(output_dir),
            "init_model_dir": init_model_dir,
            "log_level": logging.getLogger().getEffectiveLevel(),
        }
        results = elastic_launch(launch_config, _rank_entrypoint)(job)
    except ChildFailedError as err:
        raise TrainingFailedError(_describe_failures(err)) from err
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
    if 0 not in results:
        logger.info(
            "Global ranks %s on this node finished; rank 0 ran on another node",
            sorted(results),
        )
    return results.get(0)
