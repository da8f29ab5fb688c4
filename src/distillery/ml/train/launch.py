"""Start the training ranks with torch elastic (the torchrun API) and return rank 0's result.

``launch_training`` is the entry point for callers (a Kedro node): with one process it
runs the loop in-process, otherwise torch elastic spawns the ranks, which read the
frames from parquet and return their :class:`TrainResult` through the agent.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from torch.distributed.elastic.multiprocessing.errors import (
    ChildFailedError,
    ProcessFailure,
)
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from distillery.ml.data.batches import (
    TEACHER_COLUMN,
)
from distillery.ml.train.config import TrainConfig, TrainingFailedError, TrainResult
from distillery.ml.train.loop import run_training

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------- launcher

_SINGLE_PROCESS_ENV = {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
_TRANSPORT_COLUMNS = ("input_ids", "attention_mask", "label", TEACHER_COLUMN)
_MONITOR_INTERVAL_S = 0.5
# A rank that fails waits this long before exiting; see _rank_entrypoint.
_PEER_GRACE_S = 4 * _MONITOR_INTERVAL_S
PID_FILE = "rank-{rank}.pid"
_SHARE_STORE_ENV = "TORCH_DISABLE_SHARE_RDZV_TCP_STORE"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _describe_failures(err: ChildFailedError) -> str:
    """Name the failed ranks, root cause first.

    A rank that dies makes its peers fail in their next collective ("connection
    closed by peer"). A rank killed by a signal (SIGKILL, the out-of-memory killer)
    writes no error file and comes first; the others follow in the order their
    error files were written (elastic's whole-second timestamps often tie).
    """

    def written_at(item: tuple[int, ProcessFailure]) -> tuple[int, int]:
        _, failure = item
        if failure.exitcode < 0:
            return 0, failure.timestamp
        try:
            return 1, os.stat(failure.error_file).st_mtime_ns
        except OSError:
            return 2, failure.timestamp

    lines = []
    for rank, failure in sorted(err.failures.items(), key=written_at):
        message = failure.message
        if isinstance(message, dict):
            message = message.get("message", message)
        cause = (
            f"killed by {failure.signal_name()}"
            if failure.exitcode < 0
            else f"exit code {failure.exitcode}"
        )
        lines.append(f"rank {rank} ({cause}): {message}")
    return "training failed on " + "\nalso failed: ".join(lines)


@contextmanager
def _store_per_attempt() -> Iterator[None]:
    """Give every restart attempt a fresh store for the ranks' process group.

    By default the c10d rendezvous shares its TCP store with the ranks for all
    attempts, and a restarted group finds the dead group's gloo addresses under the
    same keys ("Gloo connectFullMesh failed ... Connection refused"). With sharing
    off, rank 0 hosts a new store on a free port at every attempt.
    """
    previous = os.environ.get(_SHARE_STORE_ENV)
    os.environ[_SHARE_STORE_ENV] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(_SHARE_STORE_ENV, None)
        else:
            os.environ[_SHARE_STORE_ENV] = previous


def _rank_entrypoint(job: dict[str, Any]) -> TrainResult | None:
    """What each spawned rank runs: read the frames, train, return rank 0's result.

    Args:
        job: ``config`` (dict), ``data_dir``, ``labels``, ``output_dir``,
            ``init_model_dir`` and the launcher's ``log_level``; plain types only,
            since spawn pickles them.

    Each rank writes its process id to ``rank-<RANK>.pid`` in ``data_dir``, so an
    operator (or a fault test) can tell the rank processes apart; a restarted rank
    overwrites its file.
    """
    rank = int(os.environ.get("RANK", "0"))
    data_dir = Path(job["data_dir"])
    (data_dir / PID_FILE.format(rank=rank)).write_text(f"{os.getpid()}\n")
    if not logging.getLogger().handlers:
        # Only rank 0 reports progress; the others speak up for warnings only.
        level = (
            job["log_level"] if rank == 0 else max(job["log_level"], logging.WARNING)
        )
        logging.basicConfig(
            level=level,
            format=f"[rank {rank}] %(asctime)s %(name)s %(levelname)s %(message)s",
        )
    try:
        return run_training(
            TrainConfig.from_dict(job["config"]),
            pd.read_parquet(data_dir / "train.parquet"),
            pd.read_parquet(data_dir / "val.parquet"),
            job["labels"],
            job["output_dir"],
            init_model_dir=job["init_model_dir"],
        )
    except Exception:
        # A peer killed outright (SIGKILL, the out-of-memory killer) writes no error
        # and this rank then fails in its next collective ("connection closed by
        # peer"). The agent reports the first failed rank it polls, in rank order,
        # so this rank stays a few polls longer: the dead peer is reported, not this
        # rank's echo of it. A rank that fails first keeps its peers blocked in a
        # collective meanwhile, so it is still the one reported.
        time.sleep(_PEER_GRACE_S)
        raise


def _write_frames(
    output_dir: Path, train_df: pd.DataFrame, val_df: pd.DataFrame
) -> Path:
    """Write the columns the ranks read to ``train``/``val.parquet`` in a new folder."""
    data_dir = output_dir / f".launch-{uuid.uuid4().hex[:8]}"
    data_dir.mkdir()
    for name, frame in (("train", train_df), ("val", val_df)):
        columns = [c for c in _TRANSPORT_COLUMNS if c in frame.columns]
        frame[columns].reset_index(drop=True).to_parquet(data_dir / f"{name}.parquet")
    return data_dir


def _rank_job(
    config: TrainConfig,
    data_dir: Path,
    labels: list[str],
    output_dir: Path,
    init_model_dir: str | None,
) -> dict[str, Any]:
    """What :func:`_rank_entrypoint` gets: plain types only, since spawn pickles it."""
    return {
        "config": config.to_dict(),
        "data_dir": str(data_dir),
        "labels": list(labels),
        "output_dir": str(output_dir),
        "init_model_dir": init_model_dir,
        "log_level": logging.getLogger().getEffectiveLevel(),
    }


def _launch_config(config: TrainConfig) -> LaunchConfig:
    """torch elastic's settings: this node's ranks, the rendezvous and restarts."""
    return LaunchConfig(
        # Single node: the ranks' store binds 127.0.0.1, not the host's name.
        local_addr=None if config.rdzv_endpoint else "127.0.0.1",
        min_nodes=config.nnodes,
        max_nodes=config.nnodes,
        nproc_per_node=config.nproc,
        rdzv_backend=config.rdzv_backend,
        rdzv_endpoint=config.rdzv_endpoint or f"127.0.0.1:{_free_port()}",
        run_id=config.rdzv_id or uuid.uuid4().hex,
        max_restarts=config.max_restarts,
        monitor_interval=_MONITOR_INTERVAL_S,
        start_method="spawn",
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
    ``nnodes > 1`` every node calls this with the same config and data. When a rank
    fails or is killed, torch elastic stops the others and restarts all of them up to
    ``config.max_restarts`` times; each restart resumes from the latest checkpoint.

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
        TrainingFailedError: If a rank fails with no restart left; names the rank
            and its error (or the signal that killed it).
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
    data_dir = _write_frames(output_dir, train_df, val_df)
    launch_config = _launch_config(config)
    logger.info(
        "Launching %d x %d ranks (rendezvous %s at %s; up to %d restart(s))",
        config.nnodes,
        config.nproc,
        config.rdzv_backend,
        launch_config.rdzv_endpoint,
        config.max_restarts,
    )
    try:
        job = _rank_job(config, data_dir, labels, output_dir, init_model_dir)
        with _store_per_attempt():
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
