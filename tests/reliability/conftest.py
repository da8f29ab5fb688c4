"""Fault-test helpers: train in a child process (a script over ``launch_training``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from distillery.ml.data.text import tokenize_partition

TRAIN_SCRIPT = """
import json, logging, sys
import pandas as pd
from distillery.ml.train.config import TrainConfig
from distillery.ml.train.launch import launch_training

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
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


def _frames(folder: Path) -> tuple[Path, Path]:
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
    frame.iloc[:720].to_parquet(folder / "train.parquet")
    frame.iloc[720:].to_parquet(folder / "val.parquet")
    return folder / "train.parquet", folder / "val.parquet"


class TrainJob:
    """A training run in a child process: 720 toy rows, the tiny teacher, 2 epochs.

    Args:
        folder: Where the script, the frames and every run's output go.
        model_dir: The tiny teacher.
    """

    def __init__(self, folder: Path, model_dir: Path) -> None:
        self.folder = folder
        self.script = folder / "train.py"
        self.script.write_text(TRAIN_SCRIPT)
        self.train, self.val = _frames(folder)
        self.model_dir = model_dir

    def spec(self, out: str, **overrides: Any) -> str:
        """The script's argument: train into ``folder/out`` with config ``overrides``."""
        config = {
            "model_name_or_path": str(self.model_dir),
            "max_length": 32,
            "batch_size": 4,
            "learning_rate": 1e-3,
            "epochs": 2,
            "dropout": 0.1,
            "nproc": 1,
            "num_threads": 1,
            "checkpoint_every_steps": 20,
            "patience": None,
        } | overrides
        return json.dumps(
            {
                "train": str(self.train),
                "val": str(self.val),
                "config": config,
                "out": str(self.folder / out),
            }
        )

    def start(self, spec: str) -> subprocess.Popen:
        """Start the script in its own process group (its pid is the group id)."""
        return subprocess.Popen(
            [sys.executable, str(self.script), spec],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )

    def run(self, spec: str) -> dict:
        """Run the script to the end; return its result (it must succeed)."""
        done = subprocess.run(
            [sys.executable, str(self.script), spec],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def train_job(tiny_teacher_dir: Path, tmp_path: Path) -> TrainJob:
    """A :class:`TrainJob` in ``tmp_path``."""
    return TrainJob(tmp_path, tiny_teacher_dir)


def _wait_for(
    found: Callable[[], Any], process: subprocess.Popen, timeout: float = 120
) -> Any:
    """Poll ``found()`` until it returns something truthy; fail if ``process`` ends."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = found()
        if value:
            return value
        assert process.poll() is None, "the run ended before the awaited state"
        time.sleep(0.05)
    raise AssertionError(f"nothing found within {timeout} s")


def _assert_group_gone(pgid: int, timeout: float = 10) -> None:
    """Fail unless every process of group ``pgid`` has exited within ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    survivors = [
        stat.parent.name
        for stat in Path("/proc").glob("[0-9]*/stat")
        if _pgid_of(stat) == pgid
    ]
    raise AssertionError(f"processes of group {pgid} survive: {survivors}")


def _pgid_of(stat: Path) -> int | None:
    try:
        return int(stat.read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


@pytest.fixture(scope="session")
def wait_for() -> Callable[..., Any]:
    """``wait_for(found, process, timeout=120)``: poll until ``found()`` is truthy."""
    return _wait_for


@pytest.fixture(scope="session")
def assert_group_gone() -> Callable[..., None]:
    """``assert_group_gone(pgid, timeout=10)``: no process of the group is left."""
    return _assert_group_gone
