"""Two machines (two launchers on 127.0.0.1, c10d) train what one machine with two
ranks trains, and only the machine that hosts global rank 0 saves the teacher.

Each "machine" is a separate OS process running ``_run_machine`` below: it calls the
train node as ``kedro run --pipeline train`` would, with ``nnodes: 2, nproc: 1``, and
saves the teacher the way the catalog does. Both run the same command; the c10d
rendezvous, not the start order, picks which one hosts rank 0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from distillery.datasets import ClassifierDataset
from distillery.ml.models.modeling import WEIGHTS_FILE
from distillery.pipelines.train.nodes import train_teacher

LABELS = ["negative", "positive"]
WORKER_LINE = "Global rank 0 ran on another machine"
MACHINE_TIMEOUT_S = 150


# ``params:train_options`` on top of ``tiny_train_options`` (32 rows: 4 steps per
# epoch, 2 epochs): dropout on, since each global rank's dropout stream must follow
# its rank.
MACHINE_OPTIONS: dict[str, Any] = {
    "dropout": 0.1,
    "patience": None,
    "seed": 7,
    "checkpoint_every_steps": None,
    "num_threads": 1,
    "device": "cpu",
}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run_machine(job_dir: str | Path) -> None:
    """One machine's ``kedro run --pipeline train``: the node, then the catalog save.

    On a machine without rank 0 the node raises ``SystemExit(0)`` and nothing is saved.
    """
    job_dir = Path(job_dir)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    job = json.loads((job_dir / "job.json").read_text())
    teacher, *_ = train_teacher(
        pd.read_parquet(job_dir / "train.parquet"),
        pd.read_parquet(job_dir / "val.parquet"),
        {"labels": LABELS},
        job["train_options"],
    )
    ClassifierDataset(filepath=str(job_dir / "teacher")).save(teacher)


_MACHINE_MAIN = (
    "import runpy, sys; runpy.run_path(sys.argv[1])['_run_machine'](sys.argv[2])"
)


def _start_machine(job_dir: Path) -> subprocess.Popen:
    log = (job_dir / "log.txt").open("w")
    try:
        # Own session: the launcher and its spawned rank die together on cleanup.
        # Run through `-c`, so that the spawned rank does not re-import this file.
        return subprocess.Popen(
            [sys.executable, "-c", _MACHINE_MAIN, __file__, str(job_dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        log.close()


def _kill_machine(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _weights(teacher_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(teacher_dir / WEIGHTS_FILE))


@pytest.mark.slow
@pytest.mark.timeout(2 * MACHINE_TIMEOUT_S + 60)
def test_two_machines_train_what_one_machine_with_two_ranks_trains(
    tiny_teacher_dir: Path,
    tmp_path: Path,
    trip_split: Callable[[int, int], pd.DataFrame],
    tiny_train_options: Callable[..., dict[str, Any]],
) -> None:
    train, val = trip_split(16, 0), trip_split(4, 1000)

    # One machine, two ranks.
    teacher, *_ = train_teacher(
        train,
        val,
        {"labels": LABELS},
        tiny_train_options(
            tiny_teacher_dir, tmp_path / "one" / "work", **MACHINE_OPTIONS, nproc=2
        ),
    )
    ClassifierDataset(filepath=str(tmp_path / "one" / "teacher")).save(teacher)

    # Two machines, one rank each, meeting at one c10d rendezvous.
    multinode = {
        "nproc": 1,
        "nnodes": 2,
        "rdzv_endpoint": f"127.0.0.1:{_free_port()}",
        "rdzv_backend": "c10d",
        "rdzv_id": f"test-{uuid.uuid4().hex[:8]}",
    }
    jobs = [tmp_path / name for name in ("machine_a", "machine_b")]
    for job_dir in jobs:
        job_dir.mkdir()
        train.to_parquet(job_dir / "train.parquet")
        val.to_parquet(job_dir / "val.parquet")
        options = tiny_train_options(
            tiny_teacher_dir, job_dir / "work", **MACHINE_OPTIONS, **multinode
        )
        (job_dir / "job.json").write_text(json.dumps({"train_options": options}))
    machines = [_start_machine(job_dir) for job_dir in jobs]
    try:
        codes = [m.wait(timeout=MACHINE_TIMEOUT_S) for m in machines]
    finally:
        for machine in machines:
            _kill_machine(machine)
    logs = {job_dir.name: (job_dir / "log.txt").read_text() for job_dir in jobs}
    assert codes == [0, 0], logs

    # Exactly one machine hosted rank 0 and saved the teacher.
    hosts = [job_dir for job_dir in jobs if (job_dir / "teacher").exists()]
    assert len(hosts) == 1, logs
    (host,) = hosts
    (worker,) = [job_dir for job_dir in jobs if job_dir != host]
    expected, got = _weights(tmp_path / "one" / "teacher"), _weights(host / "teacher")
    assert got.keys() == expected.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name]), name
    assert "on 2 rank(s)" in logs[host.name]

    # The other machine trained its share, said so, and wrote no model.
    assert WORKER_LINE in logs[worker.name]
    assert "exit status 0" in logs[worker.name]
    assert not (worker / "teacher").exists()
    assert list((worker / "work").iterdir()) == []  # no model, no checkpoint
