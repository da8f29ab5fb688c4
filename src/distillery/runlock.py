"""One ``kedro run`` at a time per project: an exclusive ``flock`` on a lock file.

Two runs in one project would write the same outputs (``data/``, checkpoints, the
registry aliases) and mix them. The lock is ``fcntl.flock`` on
``data/.distillery.lock``: the second run fails at once, naming the file and the
process that holds it. The kernel drops a ``flock`` when its process dies, however
it dies (``kill -9`` included), so a killed run never leaves a stale lock; the next
run finds the dead holder's record in the file, warns and takes over.

``DISTILLERY_RUN_LOCK=0`` turns the lock off, for runs known to touch disjoint
outputs.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOCK_FILE = Path("data") / ".distillery.lock"
DISABLE_ENV = "DISTILLERY_RUN_LOCK"


class RunLockedError(RuntimeError):
    """Another run holds the project lock; the message names the file and the pid."""


def _describe(record: dict[str, Any]) -> str:
    return (
        f"pid {record.get('pid', '?')}, started {record.get('started', '?')}: "
        f"`{record.get('command', '?')}`"
    )


class RunLock:
    """An exclusive, non-blocking lock on one file, held by this process.

    Args:
        path: The lock file; its folder is created if missing.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        """Whether this object holds the lock."""
        return self._fd is not None

    def _read(self, fd: int) -> dict[str, Any]:
        """The holder record in the file; empty when blank or unreadable."""
        raw = os.pread(fd, 4096, 0)
        try:
            record = json.loads(raw.decode()) if raw.strip() else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            return {"pid": "?", "command": raw[:200].decode(errors="replace")}
        return record if isinstance(record, dict) else {}

    def acquire(self) -> None:
        """Take the lock at once, or fail.

        Raises:
            RunLockedError: Another process holds it; names the file and holder.
        """
        if self.held:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # os.open's descriptors are not inherited across exec: spawned ranks and
        # Dask workers never hold the lock.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._read(fd)
            os.close(fd)
            raise RunLockedError(
                f"Another run holds the project lock {self.path} ({_describe(holder)})."
                " Two runs in one project would mix their outputs; wait for it to end"
                f" or stop it. ({DISABLE_ENV}=0 turns the lock off.)"
            ) from None
        previous = self._read(fd)
        pid = previous.get("pid")
        if pid is not None and pid != os.getpid():
            # The kernel released the lock, so its holder is dead (killed).
            logger.warning(
                "Took over the project lock %s from a run that ended without "
                "releasing it (%s), killed perhaps: its outputs may be incomplete",
                self.path,
                _describe(previous),
            )
        record = {
            "pid": os.getpid(),
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        self._fd = fd
        logger.debug("Holding the project lock %s", self.path)

    def release(self) -> None:
        """Blank the holder record and drop the lock (a no-op when not held)."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor drops the flock


def lock_disabled() -> bool:
    """Whether ``DISTILLERY_RUN_LOCK`` turns the lock off (0, false, no, off)."""
    return os.environ.get(DISABLE_ENV, "1").strip().lower() in {
        "0",
        "false",
        "no",
        "off",
    }
