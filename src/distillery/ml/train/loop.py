"""The per-rank fine-tuning and distillation loop for :class:`TextClassifier`.

``run_training`` is the loop, in nanoGPT's style: rank from the environment,
``master_process = rank == 0``, and only rank 0 logs, checkpoints and writes files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import random
import shutil
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
from torch.nn.parallel import DistributedDataParallel as DDP
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from distillery.ml.data.batches import (
    TEACHER_COLUMN,
    BucketedDistributedBatchSampler,
    PadCollator,
    TokenDataset,
    shard_by_length,
)
from distillery.ml.metrics import classification_metrics
from distillery.ml.models.modeling import WEIGHTS_FILE, TextClassifier
from distillery.ml.train.checkpoint import (
    CheckpointManager,
    capture_rng_state,
    config_hash,
    restore_rng_state,
)
from distillery.ml.train.config import TrainConfig, TrainResult
from distillery.ml.train.losses import kd_loss

logger = logging.getLogger(__name__)


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
            config.model_name_or_path, labels, config.dropout, config.pooling
        )
    model.set_dropout(config.dropout)
    max_positions = model.max_positions
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
