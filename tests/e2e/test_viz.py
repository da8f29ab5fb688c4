"""kedro-viz: every node of the six stages, one expandable box per stage namespace."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from distillery.pipeline_registry import STAGES, register_pipelines

pytestmark = pytest.mark.slow

KEDRO = str(Path(sys.executable).with_name("kedro"))


def test_viz_build_shows_one_box_per_stage(project: Path) -> None:
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
    assert {p["id"] for p in graph["pipelines"]} >= {*STAGES, "__default__"}
    nodes = register_pipelines()["__default__"].nodes
    namespaces = {n.namespace for n in nodes}
    tasks = [n for n in graph["nodes"] if n["type"] == "task"]
    # Every node is drawn, inside the box of its namespace.
    assert sorted((n["modular_pipelines"][0], n["name"]) for n in tasks) == sorted(
        (n.namespace, n._name) for n in nodes
    )
    # Collapsed, the top level is the stage boxes and the datasets between stages:
    # no loose node, and a stage's internal datasets stay inside its box.
    tree = graph["modular_pipelines"]
    top = tree["__root__"]["children"]
    assert {c["id"] for c in top if c["type"] == "modularPipeline"} == namespaces
    assert "task" not in {c["type"] for c in top}
    names = {n["id"]: n["name"] for n in graph["nodes"]}
    inside = {names[c["id"]] for c in tree["preprocess"]["children"]}
    assert "normalized_texts" in inside
    assert "normalized_texts" not in {names.get(c["id"]) for c in top}
