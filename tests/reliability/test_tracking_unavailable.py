"""An MLflow server that cannot be reached stops the run at once, before any node."""

import socket
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[
            1
        ]  # closed again when the block ends: nothing listens


def test_unreachable_tracking_server_fails_fast(project: Path, kedro_run) -> None:
    uri = f"http://127.0.0.1:{_closed_port()}"
    # The test environment stands in for conf/local, where a team sets its server.
    (project / "conf/test/mlflow.yml").write_text(
        f"server:\n  mlflow_tracking_uri: {uri}\n"
    )

    done = kedro_run("--pipeline", "ingest", timeout=120)

    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert f"MLflow tracking server {uri} is unreachable" in output
    assert "Running node" not in output
    # It stopped before the first node, not after any work.
    assert not (project / "data/01_raw/raw_corpus.parquet").exists()
