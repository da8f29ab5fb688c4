"""How the model is spread over the ranks: DDP (replicated) or FSDP2 (sharded).

The loop in :mod:`distillery.ml.train.loop` talks to a :class:`Strategy` only:

- :meth:`Strategy.prepare` adds LoRA adapters and activation checkpointing if asked,
  then wraps (DDP) or shards (FSDP2) the model; build the optimizer after it;
- :meth:`Strategy.no_sync` skips the gradient exchange on accumulation micro-steps;
- :meth:`Strategy.clip_grad_norm` clips the global gradient norm;
- :meth:`Strategy.restore` / :meth:`Strategy.save_checkpoint` read and write
  resumable checkpoints (DDP: one safetensors file from rank 0; FSDP2: every
  rank's rows as safetensors with a JSON index, :mod:`distillery.ml.train.sharded`);
- :meth:`Strategy.export_model` gives rank 0 a plain :class:`TextClassifier` with
  consolidated weights and merged adapters, which is what gets saved.
"""

from __future__ import annotations

import copy
import logging
import shutil
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from distillery.ml.models.modeling import TextClassifier
from distillery.ml.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointManager,
)
from distillery.ml.train.config import TrainConfig
from distillery.ml.train.sharded import (
    SHARDED_DIR,
    full_model_state,
    load_sharded,
    save_sharded,
)

logger = logging.getLogger(__name__)


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matmuls natively (AVX512-BF16 or AMX)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` -> ``bf16`` on CUDA and on CPUs with native bf16, else ``fp32``.

    Under ``bf16`` the forward passes run in bf16 autocast; weights, gradients,
    AdamW state and the losses stay fp32.
    """
    if precision != "auto":
        return precision
    if device.type == "cuda" or cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """bf16 autocast on ``device`` for ``bf16``; nothing for ``fp32``.

    Args:
        precision: A resolved precision (:func:`resolve_precision`).
        device: Where the forward pass runs.

    Returns:
        The context manager to run forward passes in.
    """
    if precision == "bf16":
        return torch.autocast(device.type, torch.bfloat16)
    return nullcontext()


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


def enable_activation_checkpointing(model: TextClassifier) -> None:
    """Recompute each block's activations in backward (non-reentrant checkpointing).

    Non-reentrant checkpointing keeps parameter names (no wrapper module), works
    with frozen inputs and re-runs FSDP2's all-gather hooks during recomputation.

    Raises:
        ValueError: If the encoder's architecture cannot checkpoint its blocks.
    """
    encoder = model.encoder
    if not getattr(encoder, "supports_gradient_checkpointing", False):
        raise ValueError(
            f"{type(encoder).__name__} does not support activation checkpointing"
        )
    encoder.activation_checkpointing_enable(
        activation_checkpointing_kwargs={"use_reentrant": False}
    )


def meta_skeleton(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose tensors live on the meta device (no memory).

    Loading a consolidated state dict into it with ``assign=True`` gives a plain
    model to save, without a second full copy in memory beforehand.
    """
    memo: dict[int, Any] = {}
    for param in model.parameters():
        memo[id(param)] = nn.Parameter(
            torch.empty_like(param, device="meta"), requires_grad=param.requires_grad
        )
    for buffer in model.buffers():
        memo[id(buffer)] = torch.empty_like(buffer, device="meta")
    return copy.deepcopy(model, memo)


class Strategy(ABC):
    """One way of holding the model across ranks; see the module docstring.

    Args:
        config: Training settings (``strategy``, ``lora``,
            ``activation_checkpointing``).
        device: This rank's device.
        rank: Global rank.
        world_size: Ranks in the process group.
    """

    #: Whether every rank must run the evaluation forward passes in lockstep.
    lockstep_eval = False

    def __init__(
        self, config: TrainConfig, device: torch.device, rank: int, world_size: int
    ) -> None:
        self.config = config
        self.device = device
        self.rank = rank
        self.world_size = world_size
        self.master_process = rank == 0
        # Resolved once for the run: the loop's autocast and FSDP's policy follow it.
        self.precision = resolve_precision(config.precision, device)
        self.model: nn.Module | None = None
        self.raw_model: TextClassifier | None = None
        self._skeleton: nn.Module | None = None

    @property
    def distributed(self) -> bool:
        """Whether this run has more than one rank."""
        return self.world_size > 1

    def prepare(self, model: TextClassifier) -> nn.Module:
        """Add adapters and checkpointing if configured, then wrap or shard.

        Call with the same seed on every rank (LoRA draws its initial adapters).

        Returns:
            The module to call in training (the optimizer takes its parameters).
        """
        if self.config.lora is not None or self._consolidates:
            # The plain shape to export into: without adapters, not sharded.
            self._skeleton = meta_skeleton(model)
        if self.config.lora is not None:
            from distillery.ml.train.lora import apply_lora  # noqa: PLC0415 - peft

            apply_lora(model, self.config.lora)
        if self.config.activation_checkpointing:
            enable_activation_checkpointing(model)
        self.raw_model = model
        self.model = self._wrap(model)
        return self.model

    @property
    def _consolidates(self) -> bool:
        """Whether weights must be gathered from shards before saving."""
        return False

    @abstractmethod
    def _wrap(self, model: TextClassifier) -> nn.Module:
        """Wrap or shard the (device-resident) model."""

    @abstractmethod
    def no_sync(self, sync: bool) -> Any:
        """Context for one micro-step's backward; gradients are exchanged iff ``sync``."""

    def clip_grad_norm(self, max_norm: float) -> None:
        """Clip the global gradient norm (over all ranks' gradients)."""
        nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)

    @abstractmethod
    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        """Collective: the whole model's state dict on rank 0, None elsewhere."""

    def export_model(self) -> TextClassifier | None:
        """Collective: a plain classifier on rank 0 (consolidated, adapters merged)."""
        if self._skeleton is None:
            return self.raw_model if self.master_process else None
        state = self.full_state_dict()
        if state is None:
            return None
        if self.config.lora is not None:
            from distillery.ml.train.lora import merge_lora_state  # noqa: PLC0415

            state = merge_lora_state(state, self.config.lora.scaling)
        self._skeleton.load_state_dict(state, assign=True)
        return self._skeleton

    def _release_export(self) -> None:
        """Free the tensors an export placed in the skeleton."""
        if self._skeleton is not None:
            self._skeleton.to("meta")

    def save_best(self, ckpt: CheckpointManager, epoch: int) -> None:
        """Collective: rank 0 writes the weights of a new best epoch."""
        model = self.export_model()
        if model is not None:
            ckpt.save_best(model, epoch)
        self._release_export()

    @abstractmethod
    def save_checkpoint(
        self,
        ckpt: CheckpointManager,
        optimizer: torch.optim.Optimizer,
        state: dict[str, Any],
        step: int,
        best_epoch: int | None,
    ) -> None:
        """Collective: write a resumable checkpoint.

        Args:
            ckpt: The run's checkpoint manager.
            optimizer: The optimizer (its state goes into the checkpoint).
            state: Scheduler, progress and RNG states (plain types, rank 0's).
            step: Optimizer steps done.
            best_epoch: Best epoch so far.
        """

    def restore(
        self,
        ckpt: CheckpointManager,
        latest: Checkpoint | None,
        optimizer: torch.optim.Optimizer,
    ) -> dict[str, Any] | None:
        """Collective: load a checkpoint into the model and optimizer.

        Args:
            ckpt: The run's checkpoint manager.
            latest: On rank 0, the checkpoint to resume (None: start fresh);
                ignored on the other ranks, which receive what rank 0 read.
            optimizer: The optimizer to load.

        Returns:
            The checkpoint's other state (scheduler, progress, RNG) on every rank,
            or None if there is none to resume.
        """
        payload = None
        if self.master_process and latest is not None:
            payload = self._read(ckpt, latest)
        payload = self._broadcast(payload)
        if payload is None:
            return None
        return self._load(payload, optimizer)

    @abstractmethod
    def _read(self, ckpt: CheckpointManager, latest: Checkpoint) -> dict[str, Any]:
        """Rank 0: what every rank needs to load ``latest``; plain types."""

    @abstractmethod
    def _load(
        self, payload: dict[str, Any], optimizer: torch.optim.Optimizer
    ) -> dict[str, Any]:
        """Load model and optimizer from ``payload``; return the other state."""

    def _broadcast(self, obj: Any) -> Any:
        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


class DDPStrategy(Strategy):
    """Every rank holds the whole model; gradients are all-reduced (DDP)."""

    def _wrap(self, model: TextClassifier) -> nn.Module:
        if not self.distributed:
            return model
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DDP(model, device_ids=device_ids)

    def no_sync(self, sync: bool) -> Any:
        if sync or not self.distributed:
            return nullcontext()
        return self.model.no_sync()

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        if not self.master_process:
            return None
        return {k: v.detach().cpu() for k, v in self.raw_model.state_dict().items()}

    def save_checkpoint(
        self,
        ckpt: CheckpointManager,
        optimizer: torch.optim.Optimizer,
        state: dict[str, Any],
        step: int,
        best_epoch: int | None,
    ) -> None:
        if self.master_process:
            # With adapters, the checkpoint keeps them unmerged so training resumes.
            full = {"optimizer": optimizer.state_dict(), **state}
            ckpt.save(self.raw_model, full, step, best_epoch)

    def _read(self, ckpt: CheckpointManager, latest: Checkpoint) -> dict[str, Any]:
        # Rank 0 reads, everyone receives (no shared filesystem needed).
        weights, state = ckpt.load(latest)
        if weights is None:
            raise CheckpointError(
                f"{latest.path} is sharded (strategy fsdp); resume it with "
                "strategy fsdp"
            )
        return {"weights": weights, "state": state}

    def _load(
        self, payload: dict[str, Any], optimizer: torch.optim.Optimizer
    ) -> dict[str, Any]:
        self.raw_model.load_state_dict(payload["weights"])
        state = payload["state"]
        optimizer.load_state_dict(state.pop("optimizer"))
        return state


class FSDPStrategy(Strategy):
    """FSDP2: each block and the root sharded over all ranks (``fully_shard``).

    Parameters, gradients and AdamW state are split ``1 / world_size`` per rank;
    each block's parameters are all-gathered just for its forward and backward.
    On CUDA under bf16 precision, blocks compute in bf16 and reduce gradients in
    fp32.
    """

    lockstep_eval = True

    @property
    def _consolidates(self) -> bool:
        return True

    def _wrap(self, model: TextClassifier) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh  # noqa: PLC0415
        from torch.distributed.fsdp import (  # noqa: PLC0415
            MixedPrecisionPolicy,
            fully_shard,
        )

        mesh = init_device_mesh(self.device.type, (self.world_size,))
        kwargs: dict[str, Any] = {"mesh": mesh}
        if self.device.type == "cuda" and self.precision == "bf16":
            kwargs["mp_policy"] = MixedPrecisionPolicy(
                param_dtype=torch.bfloat16, reduce_dtype=torch.float32
            )
        for block in transformer_blocks(model.encoder):
            fully_shard(block, **kwargs)
        # The root holds what is left: embeddings, final norms, the head.
        fully_shard(model, **kwargs)
        return model

    @contextmanager
    def no_sync(self, sync: bool) -> Iterator[None]:
        # Unsynced micro-steps keep unsharded gradients; the last one reduce-scatters
        # their sum.
        self.model.set_requires_gradient_sync(sync)
        try:
            yield
        finally:
            self.model.set_requires_gradient_sync(True)

    def full_state_dict(self) -> dict[str, torch.Tensor] | None:
        return full_model_state(self.model)

    def save_checkpoint(
        self,
        ckpt: CheckpointManager,
        optimizer: torch.optim.Optimizer,
        state: dict[str, Any],
        step: int,
        best_epoch: int | None,
    ) -> None:
        staging = ckpt.run_dir / f".tmp-{SHARDED_DIR}-{step:08d}"
        if self.master_process:
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
        if self.distributed:
            dist.barrier()
        save_sharded(self.model, optimizer, staging)
        if self.master_process:
            ckpt.save(None, state, step, best_epoch, sharded=staging)
        if self.distributed:
            # Nobody moves on (and may fail) before the checkpoint is complete.
            dist.barrier()

    def _read(self, ckpt: CheckpointManager, latest: Checkpoint) -> dict[str, Any]:
        # The shards stay on disk; every rank reads its own part of them.
        if not (latest.path / SHARDED_DIR).is_dir():
            raise CheckpointError(
                f"{latest.path} holds no sharded state (strategy ddp); resume "
                "it with strategy ddp"
            )
        _, state = ckpt.load(latest)
        return {"path": str(latest.path), "state": state}

    def _load(
        self, payload: dict[str, Any], optimizer: torch.optim.Optimizer
    ) -> dict[str, Any]:
        load_sharded(self.model, optimizer, Path(payload["path"]) / SHARDED_DIR)
        return payload["state"]


_STRATEGIES: dict[str, type[Strategy]] = {"ddp": DDPStrategy, "fsdp": FSDPStrategy}


def make_strategy(
    config: TrainConfig, device: torch.device, rank: int, world_size: int
) -> Strategy:
    """The strategy named by ``config.strategy``."""
    return _STRATEGIES[config.strategy](config, device, rank, world_size)
