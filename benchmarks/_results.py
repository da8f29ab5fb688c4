"""What every benchmark's JSON starts with, and where it is written.

``write_results`` puts the command, the date, the git commit, the machine and the
versions of the packages that matter to that benchmark before its own results, so that
any number in ``benchmarks/results/`` can be traced to how, on what code and where it
was made.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def git_commit() -> dict[str, Any]:
    """The commit the benchmark runs on, and whether tracked files differ from it.

    Returns:
        ``{"commit": sha, "dirty": bool}``; the sha is None outside a git checkout.
    """
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "diff", "--quiet", "HEAD", "--"], cwd=ROOT, check=False
        ).returncode
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": sha, "dirty": dirty != 0}


# CPU features that change the numbers: int8 (VNNI) and bf16 kernels, AMX tiles.
_CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_tile")


def _cpu() -> dict[str, Any]:
    """The CPU model and the features in ``_CPU_FLAGS`` it has (Linux only)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields = dict(
        (key.strip(), value.strip())
        for key, _, value in (line.partition(":") for line in info.splitlines())
        if value
    )
    flags = set(fields.get("flags", "").split())
    return {
        "cpu_model": fields.get("model name"),
        "cpu_flags": [flag for flag in _CPU_FLAGS if flag in flags],
    }


def write_results(
    out: str | Path, packages: Iterable[str], results: Mapping[str, Any]
) -> Path:
    """Write ``results`` as JSON to ``out``, after the run's provenance.

    Args:
        out: The JSON file (its folder is created).
        packages: Distributions whose versions are recorded (None if not installed).
        results: The benchmark's own keys (settings, targets, rows, ...).

    Returns:
        The path written.
    """
    payload = {
        "command": " ".join(["python", *sys.argv]),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        **git_commit(),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            **_cpu(),
        },
        "versions": {p: _version(p) for p in packages},
        **results,
    }
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_relative(payload), indent=2))
    return path


# An absolute path outside the project (a scratch file, another checkout).
_OUTSIDE = re.compile(r"(?<![\w.:/])/(?:[^\s/\"']+/)+([^\s/\"']+)")


def _relative(value: Any) -> Any:
    """Paths inside the project written from its root, paths outside it as
    ``<outside>/<name>``: results name no machine paths."""
    if isinstance(value, str):
        return _OUTSIDE.sub(r"<outside>/\1", value.replace(f"{ROOT}/", ""))
    if isinstance(value, Mapping):
        return {k: _relative(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_relative(v) for v in value]
    return value
