"""kedro-viz: the exported graph shows every node of all six stages."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distillery.pipeline_registry import STAGES, register_pipelines

pytestmark = pytest.mark.slow

KEDRO = str(Path(sys.executable).with_name("kedro"))


def test_viz_build_exports_every_node_of_every_stage(project: Path) -> None:
    done = subprocess.run(
        [KEDRO, "viz", "build"],
        cwd=project,
        env=os.environ | {"KEDRO_DISABLE_TELEMETRY": "true"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    graph = json.loads((project / "build/api/main").read_text())
    exported = {n["name"] for n in graph["nodes"] if n["type"] == "task"}
    pipelines = register_pipelines()
    expected = {n.name for stage in STAGES for n in pipelines[stage].nodes}
    assert expected == exported
    assert {p["id"] for p in graph["pipelines"]} >= {*STAGES, "__default__"}
