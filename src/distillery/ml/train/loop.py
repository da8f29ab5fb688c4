"""The per-rank fine-tuning and distillation loop for :class:`TextClassifier`.

``run_training`` is the loop, in nanoGPT's style: rank from the environment,
``master_process = rank == 0``, and only rank 0 logs, checkpoints and writes files.
Its pieces live beside it: the initial model (:mod:`.model_factory`), one step's
forward and backward passes (:mod:`.step`), validation (:mod:`.evaluation`) and the
state the run shares and checkpoints (:mod:`.run_state`).
"""

from __future__ import annotations

import logging
import math
import os
import random
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from tqdm.auto import tqdm

from distillery.ml.train.checkpoint import (
    CheckpointManager,
    config_hash,
    restore_rng_state,
)
from distillery.ml.train.config import TrainConfig, TrainResult
from distillery.ml.train.evaluation import evaluate
from distillery.ml.train.inputs import TrainingData, prepare_data
from distillery.ml.train.model_factory import build_model
from distillery.ml.train.run_state import (
    Progress,
    Run,
    publish_best,
    record_validation,
)
from distillery.ml.train.step import forward_backward
from distillery.ml.train.strategies import (
    make_strategy,
    transformer_blocks,
)

__all__ = ["run_training", "transformer_blocks"]

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------- setup


def _seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _resolve_device(name: str, local_rank: int) -> torch.device:
    """``auto``/``cuda``/``cpu`` -> this rank's device (its own GPU under CUDA)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' requested but CUDA is not available")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


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
    """Set this rank's run up, resume it and train it to the end; rank 0's result."""
    t_start = time.perf_counter()
    if world_size != config.world_size:
        raise ValueError(
            f"WORLD_SIZE {world_size} differs from nproc * nnodes = {config.world_size}"
        )
    data = prepare_data(
        config, train_df, val_df, labels, init_model_dir, rank, world_size
    )
    run, model = _setup(
        config, data, labels, output_dir, init_model_dir, rank, world_size, device
    )
    if run.master_process:
        logger.info("Training precision: %s (%s)", run.precision, config.precision)
    resumed_from_step = _resume(run)

    pbar = _progress_bar(run)
    t_train = time.perf_counter()
    try:
        samples_this_run = _run_epochs(run, model, pbar)
    finally:
        pbar.close()

    train_s = time.perf_counter() - t_train
    if not run.master_process:
        return None
    progress = run.progress
    return TrainResult(
        model_dir=str(publish_best(run.ckpt, progress, output_dir)),
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


def _setup(
    config: TrainConfig,
    data: TrainingData,
    labels: list[str],
    output_dir: Path,
    init_model_dir: str | None,
    rank: int,
    world_size: int,
    device: torch.device,
) -> tuple[Run, nn.Module]:
    """This rank's run and its prepared (wrapped or sharded) model."""
    # The same init on every rank, then per-rank dropout.
    _seed_everything(config.seed)
    strategy = make_strategy(config, device, rank, world_size)
    pooled = data.train_set.teacher_pooled
    teacher_width = None if pooled is None else int(pooled.shape[1])
    model = strategy.prepare(
        build_model(config, labels, init_model_dir, teacher_width).to(device)
    )
    _seed_everything(config.seed + rank)
    optimizer = _build_optimizer(model, config.learning_rate, config.weight_decay)
    warmup_steps = math.ceil(config.warmup_ratio * data.total_steps)
    scheduler = LambdaLR(
        optimizer, _linear_warmup_decay(warmup_steps, data.total_steps)
    )
    fields = config.hashed_fields()
    ckpt = CheckpointManager(
        config.checkpoint_dir or output_dir / "checkpoints",
        config_hash(fields, data.fingerprint),
        fields,
        data.fingerprint,
    )
    run = Run(
        config=config,
        data=data,
        labels=labels,
        rank=rank,
        world_size=world_size,
        device=device,
        strategy=strategy,
        optimizer=optimizer,
        scheduler=scheduler,
        ckpt=ckpt,
        precision=strategy.precision,
    )
    return run, model


def _progress_bar(run: Run) -> tqdm:
    """A progress bar on rank 0 (disabled elsewhere), from the resumed step."""
    return tqdm(
        total=run.data.total_steps,
        initial=run.progress.step,
        disable=not run.master_process,
        desc="train",
        dynamic_ncols=True,
        # Redrawn in place on a terminal; in logs (CI, Airflow) one line per 30 s.
        mininterval=0.1 if sys.stderr.isatty() else 30.0,
    )


def _run_epochs(run: Run, model: nn.Module, pbar: tqdm) -> int:
    """Train until the run is finished; the samples this rank's run trained on."""
    samples_this_run = 0
    while not run.progress.finished:
        run.data.sampler.set_epoch(run.progress.epoch, run.progress.batch_in_epoch)
        for indices in run.data.sampler:
            record = _optimizer_step(run, model, indices)
            samples_this_run += run.config.batch_size
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
    return samples_this_run


def _resume(run: Run) -> int | None:
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
    run.progress = Progress(**state["progress"])
    if run.rank < len(state["rng"]):
        restore_rng_state(state["rng"][run.rank])
    else:
        logger.warning("No RNG state saved for rank %d; reseeding", run.rank)
        _seed_everything(run.config.seed + run.rank + run.progress.step)
    return run.progress.step


def _optimizer_step(run: Run, model: nn.Module, indices: list[int]) -> dict[str, float]:
    """One optimizer step over this rank's share of a global batch; its record."""
    config = run.config
    t_step = time.perf_counter()
    train_loss = forward_backward(
        model,
        run.data.train_set,
        indices,
        config=config,
        strategy=run.strategy,
        device=run.device,
        precision=run.precision,
    )
    if config.max_grad_norm is not None:
        run.strategy.clip_grad_norm(config.max_grad_norm)
    lr = run.optimizer.param_groups[0]["lr"]
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.ddp:
        # The logged loss is the global batch's, whatever the world size.
        dist.all_reduce(train_loss)
        train_loss /= run.world_size
    return _record_step(run, train_loss, lr, t_step)


def _record_step(
    run: Run, train_loss: torch.Tensor, lr: float, t_step: float
) -> dict[str, float]:
    """Count the step that began at ``t_step``; keep its record, log it on rank 0."""
    config, progress = run.config, run.progress
    progress.step += 1
    progress.batch_in_epoch += 1
    samples_per_s = config.batch_size / (time.perf_counter() - t_step)
    record = {
        "step": progress.step,
        "train_loss": float(train_loss),  # waits for the step on a GPU
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


def _after_step(run: Run) -> bool:
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


def _end_epoch(run: Run) -> None:
    """Epoch end (or max_steps): validate, early-stop, keep the best, checkpoint."""
    config = run.config
    scores = evaluate(
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
        _record_epoch(run.progress, epoch, scores, config.patience)
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


def _record_epoch(
    progress: Progress, epoch: int, scores: dict[str, float], patience: int | None
) -> None:
    """Rank 0: keep the epoch's validation scores and log them."""
    record_validation(progress, epoch, scores, patience)
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
