"""The MLflow tracking server dies while the student is being registered.

A real ``mlflow server`` (SQLite backend, ``--serve-artifacts``) runs on 127.0.0.1
behind a small TCP-level relay. The relay is the fault injector: when the request
chosen as the kill point arrives, it SIGKILLs the server's process group and drops
the connection, so the client sees exactly what a crashed server looks like, at a
deterministic step instead of after a sleep. Each kill point is then followed by a
restart on the same database and artifact folder, a look at the registry, and, at
the end, a registration that succeeds.

What must hold: the register node fails with :class:`RegistrationError` naming the
step; the bundle on disk is untouched; every version in the registry loads and
predicts (none points at missing files); the alias never leaves a complete version.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.tracking._tracking_service import utils as tracking_utils

from distillery.ml.compress.export import export_onnx
from distillery.ml.models.modeling import load_tokenizer
from distillery.ml.serve.serving import RegistrationError, save_onnx_bundle
from distillery.pipelines.compress.nodes import register_student

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

LABELS = ["negative", "neutral", "positive"]
NAME, ALIAS = "distillery-student", "challenger"
REGISTRY = {"name": NAME, "alias": ALIAS}
SELECTED = {"variant": "tiny", "form": "onnx", "ratios": {"speedup": 2.0}}
VALIDATION = {"sha256": "0" * 64, "profile": {"rows": 12}}
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """``mlflow server`` on a throwaway SQLite file and artifact folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.port = _free_port()
        log = (self.root / "server.log").open("ab")
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'mlflow.db'}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
                "--serve-artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            # No background job runner (its worker processes only slow the start).
            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # the CLI and its uvicorn worker: one group
        )
        log.close()
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"mlflow server exited:\n{self._log()}")
            try:
                url = f"http://127.0.0.1:{self.port}/health"
                with urllib.request.urlopen(url, timeout=2):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.3)
        pytest.fail(f"mlflow server not healthy in 90 s:\n{self._log()}")

    def kill(self) -> None:
        """SIGKILL the whole group, as a crash or an OOM kill would."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)
        self.process = None

    def _log(self) -> str:
        return (self.root / "server.log").read_text()[-4000:]


class FaultRelay:
    """HTTP relay on a fixed port that kills the server at a chosen request.

    While the server is down the relay answers nothing (it closes each connection),
    which the client sees as it would a crashed server.

    Args:
        port: Where clients connect: the tracking URI's port, kept across restarts.
        server: The server behind it.
    """

    def __init__(self, port: int, server: MlflowServer) -> None:
        self.server = server
        self.kill_at: Callable[[str, str], bool] | None = None
        self.killed_at: str | None = None
        self.seen: list[str] = []
        self._lock = threading.Lock()
        relay = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_any(self) -> None:
                body = self._body()
                port = relay.upstream(self.command, self.path)
                if port is None:
                    self.close_connection = True  # no answer: a dead server
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                headers = {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower() not in HOP_HEADERS
                }
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                self.send_response(response.status, response.reason)
                for key, value in response.getheaders():
                    if key.lower() not in HOP_HEADERS:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> bytes | None:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while size := int(self.rfile.readline().strip() or b"0", 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    self.rfile.readline()
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else None

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def arm(self, kill_at: Callable[[str, str], bool] | None) -> None:
        """Kill the server at the first request for which ``kill_at`` is true."""
        with self._lock:
            self.kill_at, self.killed_at, self.seen = kill_at, None, []

    def upstream(self, method: str, path: str) -> int | None:
        """The server's port for this request, or None once the server is dead."""
        with self._lock:
            self.seen.append(f"{method} {path}")
            if self.kill_at is not None and self.kill_at(method, path):
                self.kill_at, self.killed_at = None, f"{method} {path}"
                self.server.kill()
            return None if self.server.process is None else self.server.port

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def bundle(tiny_classifier: Callable[..., Any], tmp_path: Path) -> Path:
    model = tiny_classifier(LABELS, shape="teacher")
    onnx_path = export_onnx(model, tmp_path / "student.onnx")
    return save_onnx_bundle(onnx_path, load_tokenizer("builtin"), tmp_path / "b", {})


@pytest.fixture
def tracking(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., FaultRelay]]:
    """Yields ``restart(kill_at=None)``: the server (re)started on the same backend,
    behind the relay armed with ``kill_at``."""
    root = tmp_path / "mlflow"
    root.mkdir()
    server = MlflowServer(root)
    relay = FaultRelay(_free_port(), server)
    # One quick retry instead of MLflow's minutes of backoff; the test is about
    # what is left behind, not about waiting.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    previous_uri = getattr(tracking_utils, "_tracking_uri", None)
    mlflow.set_tracking_uri(f"http://127.0.0.1:{relay.httpd.server_port}")

    def restart(kill_at: Callable[[str, str], bool] | None = None) -> FaultRelay:
        if server.process is None:
            server.start()
        relay.arm(kill_at)
        return relay

    try:
        yield restart
    finally:
        while mlflow.active_run() is not None:
            _end_run()
        relay.close()
        server.kill()
        mlflow.set_tracking_uri(previous_uri)
        os.environ.pop("MLFLOW_TRACKING_URI", None)


def _end_run() -> None:
    """End the active run; with the server gone MLflow drops it locally and raises."""
    try:
        mlflow.end_run("FAILED")
    except MlflowException:
        pass


def _register_in_a_run(bundle: Path, experiment_id: str) -> dict[str, Any]:
    """What ``kedro run`` does: kedro-mlflow opens a run and logs params, then the
    register node runs. The run is ended either way."""
    mlflow.start_run(experiment_id=experiment_id)
    try:
        mlflow.log_params({"compress_options.registry.name": NAME})
        info = register_student(bundle, SELECTED, VALIDATION, {}, REGISTRY)
    except BaseException:
        _end_run()
        raise
    mlflow.end_run()
    return info


def _registry() -> tuple[dict[int, bool], int | None]:
    """Every version of NAME -> whether it loads and predicts; the alias's version."""
    client = MlflowClient()
    loads = {}
    for version in client.search_model_versions(f"name='{NAME}'"):
        model = mlflow.pyfunc.load_model(f"models:/{NAME}/{version.version}")
        out = model.predict(pd.DataFrame({"text": ["great flight"]}))
        loads[int(version.version)] = out["label"].iloc[0] in LABELS and bool(
            version.tags.get("corpus_sha256")
        )
    aliases = client.get_registered_model(NAME).aliases
    return loads, int(aliases[ALIAS]) if ALIAS in aliases else None


def _digest(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
    }


def test_losing_the_server_mid_registration_leaves_the_registry_whole(
    bundle: Path, tracking: Callable[..., FaultRelay]
) -> None:
    tracking()
    experiment_id = mlflow.create_experiment("distillery")
    first = _register_in_a_run(bundle, experiment_id)
    assert (first["version"], _registry()) == (1, ({1: True}, 1))
    on_disk = _digest(bundle)

    kill_points = [
        # Half-way through uploading the pyfunc's files (the run's ONNX is up).
        (
            lambda m, p: m == "PUT" and "/models/" in p,
            "while logging the model files",
            {1: True},
        ),
        # The version exists; the alias is about to move. (Between the two, a
        # version created with its tags in one request is all or nothing.)
        (
            lambda m, p: p.endswith("/registered-models/alias") and m == "POST",
            f"while moving @{ALIAS} to version 2",
            {1: True, 2: True},
        ),
    ]
    for kill_at, step, versions in kill_points:
        relay = tracking(kill_at)
        started = time.monotonic()
        with pytest.raises(RegistrationError, match=step) as failed:
            _register_in_a_run(bundle, experiment_id)
        assert relay.killed_at is not None, f"never reached; saw {relay.seen}"
        assert time.monotonic() - started < 60
        assert "The serving bundle on disk is complete" in str(failed.value)
        assert _digest(bundle) == on_disk

        tracking()  # restart on the same database and artifact folder
        # Nothing half-written: each version loads; the alias stays on version 1.
        assert _registry() == (versions, 1)

    again = _register_in_a_run(bundle, experiment_id)

    assert again["version"] == 3
    assert _registry() == ({1: True, 2: True, 3: True}, 3)
    served = mlflow.pyfunc.load_model(again["alias_uri"])
    assert len(served.predict(pd.DataFrame({"text": ["ok", ""]}))) == 2


@pytest.mark.timeout(480)
def test_kedro_run_that_loses_the_server_stops_and_reruns(
    project: Path,
    kedro_run: Callable[..., subprocess.CompletedProcess],
    tracking: Callable[..., FaultRelay],
) -> None:
    relay = tracking(lambda m, p: m == "PUT" and "/mlflow-artifacts/" in p)
    uri = f"http://127.0.0.1:{relay.httpd.server_port}"
    # The test environment stands in for conf/local; artifacts go through the server
    # (the base config writes them to a local folder, which a lost server spares).
    (project / "conf/test/mlflow.yml").write_text(
        f"server:\n  mlflow_tracking_uri: {uri}\n"
        "tracking:\n  experiment:\n    name: distillery\n"
        "    create_experiment_kwargs:\n      artifact_location: null\n"
    )

    # The server dies as the first node's MLflow artifact (source_manifest) is saved.
    lost = kedro_run("--pipeline", "ingest", timeout=240)

    output = " ".join((lost.stdout + lost.stderr).split())  # rich wraps lines
    assert relay.killed_at is not None, f"never reached; saw {relay.seen}"
    assert lost.returncode != 0
    # The last error says what happened; the cause (saving source_manifest) is above.
    assert (
        f"TrackingLostError: MLflow tracking server {uri} stopped answering" in output
    )
    assert "Outputs saved before the failure are complete on disk" in output
    assert (
        "Failed while saving data to dataset" in output and "source_manifest" in output
    )
    assert "Running node: standardize_corpus_node" not in output  # it stopped there
    # The node's outputs on disk are whole: the Parquet copy and the local JSON.
    raw = pd.read_parquet(project / "data/01_raw/raw_corpus.parquet")
    manifest = json.loads((project / "data/01_raw/source_manifest.json").read_text())
    assert manifest["rows"] == len(raw) > 0

    tracking()  # restarted on the same database and artifact folder
    rerun = kedro_run("--pipeline", "ingest", timeout=240)

    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    assert (project / "data/02_intermediate/ingested_texts.parquet").is_file()
    client = MlflowClient()
    (experiment,) = client.search_experiments(filter_string="name = 'distillery'")
    runs = client.search_runs([experiment.experiment_id], order_by=["start_time ASC"])
    assert [r.info.status for r in runs][-1] == "FINISHED"
    artifacts = [f.path for f in client.list_artifacts(runs[-1].info.run_id)]
    assert "source_manifest.json" in artifacts
    # The run the lost server left RUNNING was closed by the rerun.
    assert runs[-2].info.status == "FAILED"
    assert runs[-2].data.tags["distillery.closed_by"] == runs[-1].info.run_id
    assert f"MLflow run {runs[-2].info.run_id} of this project was left RUNNING" in (
        " ".join((rerun.stdout + rerun.stderr).split())
    )
