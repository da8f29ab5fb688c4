"""Sharded training state as safetensors, one file per rank, and a JSON index.

Under FSDP2 no rank holds the whole model or optimizer state. Each rank writes the rows
it holds of every sharded tensor (FSDP2 shards on dim 0, as ``torch.chunk`` cuts) to
``rank-<r>.safetensors``; rank 0 adds the replicated tensors and ``index.json``: the
world size, every tensor's global shape and dtype, and the optimizer's plain values
(hyperparameters, step counts). Loading on any number of ranks reads, for each tensor,
the rows this rank now holds from whichever files hold them, so a checkpoint written
by N ranks resumes on M.

Nothing here unpickles: safetensors holds raw tensors and the index is JSON. (DCP,
``torch.distributed.checkpoint``, keeps its metadata as a pickle and reads non-tensor
values with ``torch.load(weights_only=False)``: a checkpoint folder anyone can write to
could run code on load.) Only the final model (and the best epoch's) is gathered into
one consolidated state dict on rank 0, for the usual safetensors.

All functions here are collectives: every rank of the process group calls them.
Across machines the checkpoint folder must be on storage that every rank can reach.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.tensor import DTensor, Replicate, Shard

from distillery.ml.train.checkpoint import SHARDED_DIR, SHARDED_INDEX, CheckpointError

__all__ = ["SHARDED_DIR", "full_model_state", "load_sharded", "save_sharded"]

FORMAT = "distillery-sharded-1"
_PLAIN = (int, float, bool, str, type(None))


def _rank_file(rank: int) -> str:
    return f"rank-{rank:05d}.safetensors"


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _rows(total: int, world: int, rank: int) -> tuple[int, int]:
    """``(first row, row count)`` of ``rank``'s shard of ``total`` rows, as
    ``torch.chunk`` (and so FSDP2's ``Shard(0)``) cuts them."""
    size = math.ceil(total / world) if total else 0
    first = min(rank * size, total)
    return first, min(size, total - first)


def _tensors(
    model_state: dict[str, Any], optim_state: dict[str, Any]
) -> Iterator[tuple[str, Any]]:
    """``(key, value)`` of every entry of the model and optimizer state, flattened:
    ``model/<name>`` and ``optim/<parameter>/<state name>``."""
    for name, value in model_state.items():
        yield f"model/{name}", value
    for param, entries in optim_state["state"].items():
        for name, value in entries.items():
            yield f"optim/{param}/{name}", value


def _layout(key: str, value: torch.Tensor) -> str:
    """``shard`` (rows spread over the ranks) or ``whole`` (every rank holds all)."""
    if not isinstance(value, DTensor):
        return "whole"
    placements = tuple(value.placements)
    if placements == (Shard(0),) and value.dim() > 0:
        return "shard"
    if all(isinstance(p, Replicate) for p in placements):
        return "whole"
    raise CheckpointError(f"{key}: placements {placements} are not supported")


def save_sharded(
    model: nn.Module, optimizer: torch.optim.Optimizer, path: Path
) -> None:
    """Write this rank's rows of the model and optimizer state to ``path``.

    Returns once every rank's file and the index are written (a barrier), so the
    caller may move the folder.

    Raises:
        CheckpointError: On a layout other than FSDP2's (dim-0 shards on one mesh
            dimension) or a non-tensor value JSON cannot hold.
    """
    rank, world = _rank_and_world()
    model_state, optim_state = get_state_dict(model, optimizer)
    local, tensors, plain = {}, {}, {}
    for key, value in _tensors(model_state, optim_state):
        if not isinstance(value, torch.Tensor):
            if not isinstance(value, _PLAIN) or key.startswith("model/"):
                raise CheckpointError(f"{key}: a {type(value).__name__} is not saved")
            plain[key] = value
            continue
        layout = _layout(key, value)
        tensors[key] = {
            "shape": list(value.shape),
            "dtype": str(value.dtype).removeprefix("torch."),
            "layout": layout,
        }
        data = value.to_local() if isinstance(value, DTensor) else value
        if layout == "shard":
            first, count = _rows(value.shape[0], world, rank)
            if data.shape[0] != count:
                raise CheckpointError(
                    f"{key}: rank {rank} holds {data.shape[0]} rows, expected {count}"
                )
        if layout == "shard" or rank == 0:
            local[key] = data.detach().to("cpu", copy=True).contiguous()
    path.mkdir(parents=True, exist_ok=True)
    save_file(local, str(path / _rank_file(rank)))
    if rank == 0:
        index = {
            "format": FORMAT,
            "world_size": world,
            "tensors": tensors,
            "plain": plain,
            "param_groups": optim_state["param_groups"],
        }
        (path / SHARDED_INDEX).write_text(json.dumps(index, indent=1))
    if world > 1:
        # Every rank's file is complete before anyone moves or reads the folder.
        dist.barrier()


def _read_index(path: Path) -> dict[str, Any]:
    try:
        index = json.loads((path / SHARDED_INDEX).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path / SHARDED_INDEX} is unreadable ({err})") from err
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise CheckpointError(f"{path / SHARDED_INDEX} is not a {FORMAT} index")
    return index


def _open(file: Path) -> Any:
    """A rank file opened for reading slices; a clear error if it is not safetensors."""
    try:
        return safe_open(str(file), framework="pt")
    except (OSError, SafetensorError) as err:
        raise CheckpointError(
            f"{file} is not a readable safetensors file ({err})"
        ) from err


def _saved_rows(
    files: list[Any], key: str, total: int, first: int, count: int
) -> torch.Tensor | None:
    """Rows ``first .. first + count`` of ``key``, from the files that hold them."""
    pieces = []
    for rank, file in enumerate(files):
        start, rows = _rows(total, len(files), rank)
        low, high = max(first, start), min(first + count, start + rows)
        if low < high:
            pieces.append(file.get_slice(key)[low - start : high - start])
    return torch.cat(pieces) if pieces else None


def _fill(target: torch.Tensor, files: list[Any], key: str, entry: dict) -> None:
    """Copy the saved ``key`` into ``target`` (this rank's part of it)."""
    expected = [list(target.shape), str(target.dtype).removeprefix("torch.")]
    if [entry["shape"], entry["dtype"]] != expected:
        raise CheckpointError(
            f"{key}: saved as {entry['shape']} {entry['dtype']}, the run has "
            f"{expected[0]} {expected[1]}"
        )
    local = target.to_local() if isinstance(target, DTensor) else target
    if _layout(key, target) == "shard":
        rank, world = _rank_and_world()
        first, count = _rows(target.shape[0], world, rank)
        data = _saved_rows(files, key, target.shape[0], first, count)
    else:
        data = files[0].get_tensor(key)
    if data is None or data.shape != local.shape:
        raise CheckpointError(f"{key}: the saved rows do not cover this rank's part")
    with torch.no_grad():
        local.copy_(data)


def load_sharded(
    model: nn.Module, optimizer: torch.optim.Optimizer, path: Path
) -> None:
    """Load model and optimizer state written by :func:`save_sharded` on any world size.

    Raises:
        CheckpointError: On a missing or foreign index, a rank file missing, or a
            tensor whose name, shape or dtype differs from the run's.
    """
    index = _read_index(path)
    files = [_open(path / _rank_file(rank)) for rank in range(int(index["world_size"]))]
    model_state, optim_state = get_state_dict(model, optimizer)
    for key, target in _tensors(model_state, optim_state):
        if isinstance(target, torch.Tensor):
            if key not in index["tensors"]:
                raise CheckpointError(f"{path}: no saved {key}")
            _fill(target, files, key, index["tensors"][key])
    for key, value in index["plain"].items():
        _, param, name = key.split("/", 2)
        optim_state["state"][param][name] = value
    optim_state["param_groups"] = _param_groups(
        optim_state["param_groups"], index["param_groups"]
    )
    set_state_dict(
        model,
        optimizer,
        model_state_dict=model_state,
        optim_state_dict=optim_state,
    )


def _param_groups(run: list[dict], saved: list[dict]) -> list[dict]:
    """The saved hyperparameters in the run's groups; JSON turned tuples (betas)
    into lists, so a value is given back the run's type."""
    if len(run) != len(saved):
        raise CheckpointError(
            f"{len(saved)} parameter groups saved, the run has {len(run)}"
        )
    return [
        {
            key: type(group[key])(value) if isinstance(group.get(key), tuple) else value
            for key, value in saved_group.items()
        }
        for group, saved_group in zip(run, saved, strict=True)
    ]


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """Gather the consolidated state dict onto rank 0's CPU; None on other ranks."""
    state = get_model_state_dict(
        model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    return state if dist.get_rank() == 0 else None
