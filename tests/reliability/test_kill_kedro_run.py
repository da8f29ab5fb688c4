"""kill -9 the whole `kedro run --pipeline train` (agent and 2 gloo ranks), then rerun.

No process of the killed run survives, the lock it held is taken over, and the rerun
resumes from the checkpoint and ends with the unbroken run's teacher weights.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

# 10 optimizer steps (160 rows, batch 16), a checkpoint every 2 of them.
SHORT = "train_options.max_train_samples=160,train_options.checkpoint_every_steps=2"
WORKDIR = "data/06_models/crashed_work"
KEDRO = str(Path(sys.executable).with_name("kedro"))


def _summary(project: Path) -> dict:
    return json.loads(
        (project / "data/08_reporting/teacher_train_summary.json").read_text()
    )


def _teacher_weights(project: Path) -> list[dict]:
    """The teacher's weights of each saved version, oldest first."""
    versions = sorted((project / "data/06_models/teacher").iterdir())
    return [load_file(str(v / "teacher" / "model.safetensors")) for v in versions]


def test_kill_9_of_the_kedro_run_then_resume(
    project: Path, kedro_run, wait_for, assert_group_gone
) -> None:
    # The unbroken run, data stages included, with its own work folder.
    unbroken = kedro_run(
        "--pipelines", "ingest,validate,preprocess,train", "--params", SHORT
    )
    assert unbroken.returncode == 0, unbroken.stdout[-3000:] + unbroken.stderr[-3000:]
    unbroken_summary = _summary(project)
    assert unbroken_summary["resumed_from_step"] is None

    train = [
        "--pipeline",
        "train",
        "--params",
        f"{SHORT},train_options.workdir={WORKDIR}",
    ]
    crashed = subprocess.Popen(
        [KEDRO, "run", "--env", "test", *train],
        cwd=project,
        env=os.environ | {"KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "200"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: agent and ranks
    )
    checkpoints = project / WORKDIR / "checkpoints"
    wait_for(lambda: list(checkpoints.glob("run-*/step-*")), crashed, timeout=300)
    os.killpg(crashed.pid, signal.SIGKILL)
    crashed.wait(timeout=30)
    assert crashed.returncode == -signal.SIGKILL
    assert_group_gone(crashed.pid)  # no rank outlives the agent
    assert len(_teacher_weights(project)) == 1  # the killed run saved no teacher

    resumed = kedro_run(*train)
    output = resumed.stdout + resumed.stderr
    assert resumed.returncode == 0, output[-3000:]
    assert "Took over the project lock" in output  # the killed run's lock
    assert "Resuming from checkpoint step" in output
    summary = _summary(project)
    assert summary["resumed_from_step"] >= 2
    assert summary["epoch_history"] == unbroken_summary["epoch_history"]
    first, last = _teacher_weights(project)
    assert first.keys() == last.keys()
    assert all((first[k] == last[k]).all() for k in first), (
        "the resumed teacher differs from the unbroken run's"
    )
    # The MLflow run the killed process left RUNNING was closed by the rerun.
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("distillery")
    runs = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time ASC"]
    )
    assert [r.info.status for r in runs] == ["FINISHED", "FAILED", "FINISHED"]
    assert runs[1].data.tags["distillery.closed_by"] == runs[2].info.run_id
