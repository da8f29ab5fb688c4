"""SIGKILL one of 2 gloo ranks mid-epoch: elastic restarts from the last checkpoint."""

import os
import signal
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

TWO_RANKS = {"nproc": 2, "checkpoint_every_steps": 10, "max_steps": 60}


def _kill_rank_1_after_a_checkpoint(job, out: Path, process, wait_for) -> int:
    """SIGKILL rank 1 once a step checkpoint exists; return the time of the kill."""
    wait_for(lambda: list((out / "checkpoints").glob("run-*/step-*")), process)
    pid_file = wait_for(lambda: list(out.glob(".launch-*/rank-1.pid")), process)[0]
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    return time.monotonic()


def test_a_killed_rank_restarts_from_the_last_checkpoint(
    train_job, wait_for, assert_group_gone
) -> None:
    out = train_job.folder / "killed"
    process = train_job.start(train_job.spec("killed", **TWO_RANKS, max_restarts=1))
    _kill_rank_1_after_a_checkpoint(train_job, out, process, wait_for)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-3000:]
    assert_group_gone(process.pid)
    assert "Resuming from checkpoint step" in stderr

    restarted = __import__("json").loads(stdout.strip().splitlines()[-1])
    unbroken = train_job.run(train_job.spec("unbroken", **TWO_RANKS))
    assert restarted["resumed_from_step"] >= 10
    assert unbroken["resumed_from_step"] is None
    assert restarted["epoch_history"] == unbroken["epoch_history"]
    a = load_file(str(Path(restarted["model_dir"]) / "model.safetensors"))
    b = load_file(str(Path(unbroken["model_dir"]) / "model.safetensors"))
    assert all((a[k] == b[k]).all() for k in a)


def test_a_killed_rank_without_restarts_fails_naming_rank_and_signal(
    train_job, wait_for, assert_group_gone
) -> None:
    out = train_job.folder / "killed"
    process = train_job.start(train_job.spec("killed", **TWO_RANKS, max_restarts=0))
    killed_at = _kill_rank_1_after_a_checkpoint(train_job, out, process, wait_for)
    _, stderr = process.communicate(timeout=120)
    assert time.monotonic() - killed_at < 60
    assert process.returncode == 1
    assert "TrainingFailedError: training failed on rank 1 (killed by SIGKILL)" in (
        stderr
    )
    assert_group_gone(process.pid)
    # The step checkpoints stay for a rerun; the launch folder is removed.
    assert list((out / "checkpoints").glob("run-*/step-*"))
    assert not list(out.glob(".launch-*"))
