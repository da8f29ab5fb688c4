"""A throw-away copy of the project for end-to-end ``kedro run`` tests."""

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEDRO = str(Path(sys.executable).with_name("kedro"))
LAYERS = (
    "01_raw",
    "02_intermediate",
    "03_primary",
    "04_feature",
    "05_model_input",
    "06_models",
    "07_model_output",
    "08_reporting",
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The project's configuration in a fresh folder, with empty data layers."""
    copy = tmp_path / "project"
    copy.mkdir()
    shutil.copy(ROOT / "pyproject.toml", copy)
    (
        copy / "src"
    ).mkdir()  # kedro wants the folder; the package is installed (editable)
    shutil.copytree(
        ROOT / "conf", copy / "conf", ignore=shutil.ignore_patterns("local")
    )
    (copy / "conf" / "local").mkdir()
    for layer in LAYERS:
        (copy / "data" / layer).mkdir(parents=True)
    return copy


@pytest.fixture
def kedro_run(project: Path) -> Callable[..., subprocess.CompletedProcess]:
    """Run ``kedro run --env test <args>`` in the copy; return the finished process."""

    def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        env = os.environ | {"KEDRO_DISABLE_TELEMETRY": "true", "COLUMNS": "200"}
        return subprocess.run(
            [KEDRO, "run", "--env", "test", *args],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    return run
