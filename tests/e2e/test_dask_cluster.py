"""preprocess on a real Dask cluster (a scheduler and two workers on 127.0.0.1)."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _splits(project: Path) -> dict[str, pd.DataFrame]:
    return {
        split: pd.read_parquet(project / "data/05_model_input" / split)
        .sort_values("source_row")
        .reset_index(drop=True)
        for split in ("train", "val", "test")
    }


def _wait_for(port: int, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def test_preprocess_on_a_cluster_matches_the_local_run(
    project: Path, kedro_run
) -> None:
    for stage in ("ingest", "validate", "preprocess"):
        done = kedro_run("--pipeline", stage)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    local = _splits(project)

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = os.environ | {"DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    processes = [
        subprocess.Popen(
            [
                BIN / "dask",
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--no-dashboard",
            ],
            env=env,
            cwd=project,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        _wait_for(port)
        for _ in range(2):
            processes.append(
                subprocess.Popen(
                    [
                        BIN / "dask",
                        "worker",
                        address,
                        "--nworkers",
                        "1",
                        "--nthreads",
                        "1",
                        "--host",
                        "127.0.0.1",
                        "--no-dashboard",
                    ],
                    env=env,
                    cwd=project,
                    start_new_session=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        done = kedro_run(
            "--pipeline", "preprocess", "--params", f"dask.address={address}"
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert f"connected to the cluster at {address}" in done.stdout + done.stderr
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    clustered = _splits(project)
    for split, frame in local.items():
        pd.testing.assert_frame_equal(clustered[split], frame)
