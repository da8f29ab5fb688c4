"""Sharded training state through ``torch.distributed.checkpoint`` (DCP).

Under FSDP2 no rank holds the whole model or optimizer state. Each rank writes its
own shards of both into one DCP folder, and DCP reshards on load, so a checkpoint
written by N ranks resumes on M. Only the final model (and the best epoch's) is
gathered into one consolidated state dict on rank 0, for the usual safetensors.

All functions here are collectives: every rank of the process group calls them.
Across machines the checkpoint folder must be on storage that every rank can reach.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)

from distillery.ml.train.checkpoint import SHARDED_DIR

__all__ = ["SHARDED_DIR", "full_model_state", "load_sharded", "save_sharded"]


def save_sharded(
    model: nn.Module, optimizer: torch.optim.Optimizer, path: Path
) -> None:
    """Write this rank's shards of the model and optimizer state to ``path``."""
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optim": optim_state}, checkpoint_id=str(path))


def load_sharded(
    model: nn.Module, optimizer: torch.optim.Optimizer, path: Path
) -> None:
    """Load model and optimizer state from a DCP folder written by any world size."""
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optim_state}
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(
        model,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optim"],
    )


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """Gather the consolidated state dict onto rank 0's CPU; None on other ranks."""
    state = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    return state if dist.get_rank() == 0 else None
