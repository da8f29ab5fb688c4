"""Two runs in one project: the second refuses at once, naming the lock and its holder."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from distillery.runlock import LOCK_FILE, RunLock, RunLockedError

HOLDER = """
import sys, time
from distillery.runlock import RunLock
RunLock(sys.argv[1]).acquire()
print("locked", flush=True)
time.sleep(600)
"""


def _hold(lock_file: Path) -> subprocess.Popen:
    """A second process that takes the lock and keeps it until killed."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_file)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def _kill(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


def test_a_held_lock_refuses_a_second_process(tmp_path: Path) -> None:
    lock_file = tmp_path / "data" / ".distillery.lock"
    holder = _hold(lock_file)
    try:
        with pytest.raises(RunLockedError) as refused:
            RunLock(lock_file).acquire()
    finally:
        _kill(holder)
    message = str(refused.value)
    assert str(lock_file) in message
    assert f"pid {holder.pid}" in message


def test_a_killed_holder_leaves_no_stale_lock(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    lock_file = tmp_path / "data" / ".distillery.lock"
    holder = _hold(lock_file)
    _kill(holder)  # kill -9: no chance to release

    lock = RunLock(lock_file)
    with caplog.at_level(logging.WARNING, logger="distillery.runlock"):
        lock.acquire()
    assert lock.held
    assert f"pid {holder.pid}" in caplog.text and "Took over" in caplog.text
    assert json.loads(lock_file.read_text())["pid"] == os.getpid()
    lock.release()
    assert lock_file.read_text() == ""  # released cleanly: the next run says nothing
    again = RunLock(lock_file)
    again.acquire()
    again.release()


@pytest.mark.slow
def test_a_second_kedro_run_fails_fast_then_runs_once_the_holder_dies(
    project: Path, kedro_run
) -> None:
    lock_file = project / LOCK_FILE
    holder = _hold(lock_file)
    try:
        started = time.monotonic()
        refused = kedro_run("--pipeline", "ingest", timeout=120)
        elapsed = time.monotonic() - started
    finally:
        _kill(holder)
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0
    assert "RunLockedError: Another run holds the project lock" in output
    assert str(lock_file) in output
    assert f"pid {holder.pid}" in output
    assert "Running node" not in output
    assert not (project / "data/01_raw/raw_corpus.parquet").exists()
    assert elapsed < 60, f"the refusal took {elapsed:.0f} s"

    done = kedro_run("--pipeline", "ingest", timeout=300)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "Took over the project lock" in output
    assert (project / "data/01_raw/raw_corpus.parquet").exists()
    assert lock_file.read_text() == ""  # the run released it
