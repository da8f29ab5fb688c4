"""kill -9 during training, rerun: it resumes and ends exactly where an unbroken run ends."""

import os
import signal
from pathlib import Path

import pytest
from safetensors.torch import load_file

pytestmark = pytest.mark.slow


def test_kill_9_after_a_checkpoint_then_resume(train_job, wait_for) -> None:
    crashed = train_job.folder / "crashed"
    spec = train_job.spec("crashed")

    process = train_job.start(spec)
    wait_for(lambda: list((crashed / "checkpoints").glob("run-*/step-*")), process)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL

    resumed = train_job.run(spec)
    unbroken = train_job.run(train_job.spec("unbroken"))

    assert (
        resumed["resumed_from_step"] is not None and resumed["resumed_from_step"] >= 20
    )
    assert unbroken["resumed_from_step"] is None
    assert resumed["epoch_history"] == unbroken["epoch_history"]  # same metrics
    a = load_file(str(Path(resumed["model_dir"]) / "model.safetensors"))
    b = load_file(str(Path(unbroken["model_dir"]) / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all((a[k] == b[k]).all() for k in a), (
        "resumed weights differ from an unbroken run"
    )
