"""The per-rank fine-tuning and distillation loop for :class:`TextClassifier`.

``run_training`` is the loop, in nanoGPT's style: rank from the environment,
``master_process = rank == 0``, and only rank 0 logs, checkpoints and writes files.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import random
import shutil
import sys
import time
import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from distillery.ml.data.batches import (
    PadCollator,
    TokenDataset,
    shard_by_length,
)
from distillery.ml.metrics import classification_metrics
from distillery.ml.models.modeling import TextClassifier
from distillery.ml.train.checkpoint import (
    CheckpointManager,
    capture_rng_state,
    config_hash,
    restore_rng_state,
)
from distillery.ml.train.config import TrainConfig, TrainResult
from distillery.ml.train.inputs import TrainingData, prepare_data
from distillery.ml.train.losses import kd_loss, representation_loss
from distillery.ml.train.strategies import (
    Strategy,
    make_strategy,
    transformer_blocks,
)

__all__ = ["run_training", "transformer_blocks"]

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


def _autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """bf16 autocast on ``device`` for ``bf16``; nothing for ``fp32``."""
    if precision == "bf16":
        return torch.autocast(device.type, torch.bfloat16)
    return nullcontext()


def _build_model(
    config: TrainConfig,
    labels: list[str],
    init_model_dir: str | None,
    teacher_width: int | None = None,
) -> TextClassifier:
    """The model factory: a saved classifier if given, else a pretrained encoder;
    with ``teacher_width``, a projection of its pooled embedding to that width."""
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
    if teacher_width is not None:
        model.attach_projection(teacher_width)
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


# ------------------------------------------------------------------ loop pieces


def _compute_loss(
    config: TrainConfig,
    outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
    batch: dict[str, torch.Tensor],
) -> torch.Tensor:
    """The training loss of a micro-batch: ``outputs`` are the logits, or the logits
    and the projected pooled embedding when ``kd_hidden_weight`` is set."""
    projected = None
    if isinstance(outputs, tuple):
        outputs, projected = outputs
    logits = outputs.float()  # (b, C); losses in fp32 under bf16 autocast
    if config.loss == "ce":
        return F.cross_entropy(logits, batch["labels"])
    loss = kd_loss(
        logits,
        batch["teacher_logits"],
        batch["labels"],
        config.kd_alpha,
        config.kd_temperature,
    )
    if projected is not None:
        loss = loss + config.kd_hidden_weight * representation_loss(
            projected, batch["teacher_pooled"]
        )
    return loss


@torch.no_grad()
def _evaluate(
    raw_model: nn.Module,
    val_set: TokenDataset,
    *,
    labels: list[str],
    config: TrainConfig,
    device: torch.device,
    rank: int,
    world_size: int,
    lockstep: bool = False,
    precision: str = "fp32",
) -> dict[str, float] | None:
    """Validation loss, accuracy and macro-F1 over all ranks' shards; rank 0 only.

    Each rank scores a disjoint shard; the logits are gathered and scored once on
    rank 0, so the numbers do not depend on the world size. With ``lockstep``
    (a sharded model, whose forward is a collective) every rank runs as many
    forward passes as the busiest one, the extra ones on a throwaway row.
    """
    raw_model.eval()
    collate = PadCollator(config.pad_token_id)
    batches = shard_by_length(val_set.lengths, config.eval_batch_size, world_size, rank)
    passes = len(batches)
    if lockstep and world_size > 1:
        most = torch.tensor(passes, device=device)
        dist.all_reduce(most, op=dist.ReduceOp.MAX)
        passes = int(most)
    indices: list[int] = []
    outputs: list[np.ndarray] = []
    for n in range(passes):
        idx = batches[n] if n < len(batches) else [0]
        batch = collate([val_set[i] for i in idx])
        with _autocast(precision, device):
            logits = raw_model(
                batch["input_ids"].to(device), batch["attention_mask"].to(device)
            )  # (b, C)
        if n < len(batches):
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
    scheduler: LambdaLR, progress: _Progress, rng: list[dict[str, Any]]
) -> dict[str, Any]:
    """Everything but the weights and optimizer, which the strategy writes."""
    return {
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
    # FSDP2 shards over a process group even when it has one rank (e.g. resuming a
    # sharded checkpoint in-process); one rank needs no rendezvous.
    grouped = ddp or config.strategy == "fsdp"
    if grouped:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if ddp:
            dist.init_process_group(backend=backend)
        else:
            dist.init_process_group(
                backend=backend, store=dist.HashStore(), rank=0, world_size=1
            )
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
        if grouped and not ddp:
            dist.destroy_process_group()  # no peers to confuse
    # Not in `finally`: on an error, tearing the group down first would close the
    # peers' sockets before this rank records its error, and a peer's "connection
    # closed" would then pass for the root cause.
    if ddp:
        # Every rank's collectives done before any tears down: gloo work still
        # alive at interpreter exit can abort the process (SIGABRT; pytorch#179291).
        dist.barrier()
        dist.destroy_process_group()
    return result


@dataclass
class _Run:
    """What the pieces of one training run share on this rank."""

    config: TrainConfig
    data: TrainingData
    labels: list[str]
    rank: int
    world_size: int
    device: torch.device
    strategy: Strategy
    optimizer: torch.optim.Optimizer
    scheduler: LambdaLR
    ckpt: CheckpointManager
    precision: str = "fp32"  # resolved: fp32 or bf16 (autocast)
    progress: _Progress = field(default_factory=_Progress)

    @property
    def master_process(self) -> bool:
        return self.rank == 0

    @property
    def ddp(self) -> bool:
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


def _train(
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
    if world_size != config.world_size:
        raise ValueError(
            f"WORLD_SIZE {world_size} differs from nproc * nnodes = {config.world_size}"
        )
    data = prepare_data(
        config, train_df, val_df, labels, init_model_dir, rank, world_size
    )
    fields = config.hashed_fields()
    run_hash = config_hash(fields, data.fingerprint)

    # ---- model and optimizer; the same init on every rank, then per-rank dropout
    _seed_everything(config.seed)
    strategy = make_strategy(config, device, rank, world_size)
    pooled = data.train_set.teacher_pooled
    teacher_width = None if pooled is None else int(pooled.shape[1])
    model = strategy.prepare(
        _build_model(config, labels, init_model_dir, teacher_width).to(device)
    )
    _seed_everything(config.seed + rank)
    optimizer = _build_optimizer(model, config.learning_rate, config.weight_decay)
    warmup_steps = math.ceil(config.warmup_ratio * data.total_steps)
    scheduler = LambdaLR(
        optimizer, _linear_warmup_decay(warmup_steps, data.total_steps)
    )
    run = _Run(
        config,
        data,
        labels,
        rank,
        world_size,
        device,
        strategy,
        optimizer,
        scheduler,
        CheckpointManager(
            config.checkpoint_dir or output_dir / "checkpoints",
            run_hash,
            fields,
            data.fingerprint,
        ),
        strategy.precision,
    )
    if run.master_process:
        logger.info("Training precision: %s (%s)", run.precision, config.precision)
    resumed_from_step = _resume(run)

    pbar = tqdm(
        total=data.total_steps,
        initial=run.progress.step,
        disable=not run.master_process,
        desc="train",
        dynamic_ncols=True,
        # Redrawn in place on a terminal; in logs (CI, Airflow) one line per 30 s.
        mininterval=0.1 if sys.stderr.isatty() else 30.0,
    )
    samples_this_run = 0
    t_train = time.perf_counter()
    try:
        while not run.progress.finished:
            data.sampler.set_epoch(run.progress.epoch, run.progress.batch_in_epoch)
            for indices in data.sampler:
                record = _optimizer_step(run, model, indices)
                samples_this_run += config.batch_size
                pbar.update(1)
                pbar.set_postfix(
                    loss=f"{record['train_loss']:.4f}",
                    lr=f"{record['lr']:.2e}",
                    samples_s=f"{record['samples_per_s']:.0f}",
                    refresh=False,
                )
                if _after_step(run):
                    break
            _end_epoch(run)
    finally:
        pbar.close()

    train_s = time.perf_counter() - t_train
    if not run.master_process:
        return None
    progress = run.progress
    return TrainResult(
        model_dir=str(_publish_best(run.ckpt, progress, output_dir)),
        step_history=progress.step_history,
        epoch_history=progress.epoch_history,
        best_epoch=int(progress.best_epoch),
        best_val_macro_f1=float(progress.best_val_macro_f1),
        resumed_from_step=resumed_from_step,
        samples_per_s=samples_this_run / train_s if samples_this_run else 0.0,
        wall_s=time.perf_counter() - t_start,
        train_samples=len(data.train_set),
        world_size=world_size,
        stopped_early=progress.stopped_early,
        precision=run.precision,
    )


def _resume(run: _Run) -> int | None:
    """Load the latest checkpoint of this config, if any; return its step."""
    latest = None
    if run.master_process:
        latest = run.ckpt.latest()
        if latest is not None:
            logger.info(
                "Resuming from checkpoint step %d (%s, config hash %s)",
                latest.step,
                latest.path,
                run.ckpt.run_hash[:16],
            )
        else:
            logger.info("%s", run.ckpt.explain_fresh_start())
    state = run.strategy.restore(run.ckpt, latest, run.optimizer)
    if state is None:
        return None
    run.scheduler.load_state_dict(state["scheduler"])
    run.progress = _Progress(**state["progress"])
    if run.rank < len(state["rng"]):
        restore_rng_state(state["rng"][run.rank])
    else:
        logger.warning("No RNG state saved for rank %d; reseeding", run.rank)
        _seed_everything(run.config.seed + run.rank + run.progress.step)
    return run.progress.step


def _optimizer_step(
    run: _Run, model: nn.Module, indices: list[int]
) -> dict[str, float]:
    """One optimizer step over this rank's share of a global batch; its record."""
    config, device, strategy = run.config, run.device, run.strategy
    collate = PadCollator(config.pad_token_id)
    t_step = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    for micro_step in range(config.grad_accum_steps):
        # Strided, so each micro-batch spans the (sorted) lengths alike, and padded
        # on its own, to its longest row.
        micro = collate(
            [
                run.data.train_set[i]
                for i in indices[micro_step :: config.grad_accum_steps]
            ]
        )
        micro = {k: v.to(device) for k, v in micro.items()}
        # Gradients are exchanged only on the last micro-step.
        with strategy.no_sync(micro_step == config.grad_accum_steps - 1):
            with _autocast(run.precision, device):
                outputs = model(  # (b, C) logits [, (b, H) projected embeddings]
                    micro["input_ids"],
                    micro["attention_mask"],
                    **({"with_projection": True} if "teacher_pooled" in micro else {}),
                )
            loss = _compute_loss(config, outputs, micro)
            (loss / config.grad_accum_steps).backward()
        loss_sum += loss.detach()
    if config.max_grad_norm is not None:
        strategy.clip_grad_norm(config.max_grad_norm)
    lr = run.optimizer.param_groups[0]["lr"]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)

    train_loss = loss_sum / config.grad_accum_steps
    if run.ddp:
        # The logged loss is the global batch's, whatever the world size.
        dist.all_reduce(train_loss)
        train_loss /= run.world_size
    progress = run.progress
    progress.step += 1
    progress.batch_in_epoch += 1
    samples_per_s = config.batch_size / (time.perf_counter() - t_step)
    record = {
        "step": progress.step,
        "train_loss": float(train_loss),
        "lr": float(lr),
        "samples_per_s": float(samples_per_s),
    }
    progress.step_history.append(record)
    if run.master_process and progress.step % config.log_every_steps == 0:
        logger.info(
            "step %d/%d loss %.4f lr %.3e %.1f samples/s",
            progress.step,
            run.data.total_steps,
            record["train_loss"],
            lr,
            samples_per_s,
        )
    return record


def _after_step(run: _Run) -> bool:
    """Checkpoint if due, inject a configured fault; True when the run is done."""
    progress, config = run.progress, run.config
    epoch_done = progress.batch_in_epoch == run.data.steps_per_epoch
    run_done = progress.step >= run.data.total_steps
    every = config.checkpoint_every_steps
    # The epoch-end checkpoint covers a step that also ends the epoch.
    if every and progress.step % every == 0 and not (epoch_done or run_done):
        run.save_checkpoint()
    if progress.step == config.fail_at_step and run.rank == config.fail_rank:
        raise RuntimeError(
            f"injected fault on rank {run.rank} after step {progress.step} "
            "(TrainConfig.fail_at_step)"
        )
    return run_done


def _end_epoch(run: _Run) -> None:
    """Epoch end (or max_steps): validate, early-stop, keep the best, checkpoint."""
    config = run.config
    scores = _evaluate(
        run.strategy.model,
        run.data.val_set,
        labels=run.labels,
        config=config,
        device=run.device,
        rank=run.rank,
        world_size=run.world_size,
        lockstep=run.strategy.lockstep_eval,
        precision=run.precision,
    )
    epoch = run.progress.epoch + 1
    if run.master_process:
        progress = run.progress
        progress.epoch_history.append({"epoch": epoch, "step": progress.step, **scores})
        if scores["val_macro_f1"] > progress.best_val_macro_f1:
            progress.best_val_macro_f1 = scores["val_macro_f1"]
            progress.best_epoch = epoch
            progress.bad_epochs = 0
        else:
            progress.bad_epochs += 1
        progress.stopped_early = (
            config.patience is not None and progress.bad_epochs >= config.patience
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
    progress = run.progress = run.broadcast(run.progress)
    if progress.best_epoch == epoch:
        run.strategy.save_best(run.ckpt, epoch)
    progress.epoch += 1
    progress.batch_in_epoch = 0
    progress.finished = (
        progress.stopped_early
        or progress.step >= run.data.total_steps
        or progress.epoch >= config.epochs
    )
    run.save_checkpoint()
    if progress.stopped_early:
        logger.info(
            "Stopping early: no better val macro-F1 for %d epochs", progress.bad_epochs
        )


def _publish_best(
    ckpt: CheckpointManager, progress: _Progress, output_dir: Path
) -> Path:
    """Rank 0: copy the best epoch's weights to ``output_dir/model`` atomically."""
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
