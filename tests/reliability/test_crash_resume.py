"""kill -9 during training, rerun: it resumes and ends exactly where an unbroken run ends."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from safetensors.torch import load_file

from distillery.ml.data.text import tokenize_partition

pytestmark = pytest.mark.slow

SCRIPT = """
import json, sys
import pandas as pd
from distillery.ml.train.config import TrainConfig
from distillery.ml.train.launch import launch_training

if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    train = pd.read_parquet(spec["train"])
    val = pd.read_parquet(spec["val"])
    config = TrainConfig.from_dict(spec["config"])
    result = launch_training(config, train, val, ["negative", "positive"], spec["out"])
    print(json.dumps({
        "resumed_from_step": result.resumed_from_step,
        "model_dir": result.model_dir,
        "epoch_history": result.epoch_history,
    }))
"""


def _frames(tmp_path: Path) -> tuple[Path, Path]:
    words = {
        "negative": ["awful", "late", "rude"],
        "positive": ["great", "kind", "smooth"],
    }
    rows = [
        {"text": f"{ws[i % 3]} flight {i}", "label": label, "source_row": i}
        for i in range(400)
        for label, ws in words.items()
    ]
    frame = tokenize_partition(
        pd.DataFrame(rows), "builtin", 32, {"negative": 0, "positive": 1}
    )
    frame = frame.assign(
        input_ids=frame["input_ids"].map(list),
        attention_mask=frame["attention_mask"].map(list),
    )
    frame.iloc[:720].to_parquet(tmp_path / "train.parquet")
    frame.iloc[720:].to_parquet(tmp_path / "val.parquet")
    return tmp_path / "train.parquet", tmp_path / "val.parquet"


def _spec(tiny_teacher_dir: Path, tmp_path: Path, out: str) -> str:
    train, val = _frames(tmp_path)
    config = {
        "model_name_or_path": str(tiny_teacher_dir),
        "max_length": 32,
        "batch_size": 4,
        "learning_rate": 1e-3,
        "epochs": 2,
        "dropout": 0.1,
        "nproc": 1,
        "num_threads": 1,
        "checkpoint_every_steps": 20,
        "patience": None,
    }
    return json.dumps(
        {"train": str(train), "val": str(val), "config": config, "out": out}
    )


def _run(spec: str, script: Path) -> dict:
    done = subprocess.run(
        [sys.executable, str(script), spec],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_kill_9_after_a_checkpoint_then_resume(
    tiny_teacher_dir: Path, tmp_path: Path
) -> None:
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    crashed = str(tmp_path / "crashed")
    spec = _spec(tiny_teacher_dir, tmp_path, crashed)

    process = subprocess.Popen(
        [sys.executable, str(script), spec],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    checkpoints = Path(crashed) / "checkpoints"
    while not list(checkpoints.glob("run-*/step-*")) and time.monotonic() < deadline:
        assert process.poll() is None, "training ended before its first checkpoint"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    resumed = _run(spec, script)
    unbroken = _run(spec.replace(crashed, str(tmp_path / "unbroken")), script)

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
