"""notebooks/explore_runs.ipynb, executed headless on the full tiny run's outputs."""

import base64
import json
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "explore_runs.ipynb"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _output_text(cell: nbformat.NotebookNode) -> str:
    """What a cell showed: HTML (tables) or Markdown where there is any, else text."""
    parts = []
    for output in cell.get("outputs", []):
        if output.output_type == "stream":
            parts.append(output.text)
        elif "data" in output:
            data = output.data
            parts.append(
                data.get("text/html")
                or data.get("text/markdown")
                or data.get("text/plain", "")
            )
    return ANSI.sub("", "\n".join(parts))


def _cell(nb: nbformat.NotebookNode, code: str) -> nbformat.NotebookNode:
    """The one code cell whose source contains ``code``."""
    (cell,) = [c for c in nb.cells if c.cell_type == "code" and code in c.source]
    return cell


def test_explore_runs_notebook_shows_teacher_students_and_registry(
    full_run, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert full_run.resumed is not None and full_run.resumed.returncode == 0, (
        "the full tiny run failed; see test_full_run"
    )
    project = full_run.project
    # The kernel inherits these: the notebook loads the test copy, not this checkout.
    monkeypatch.setenv("DISTILLERY_PROJECT", str(project))
    monkeypatch.setenv("KEDRO_ENV", "test")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells), "commit it with outputs cleared"

    # Raises CellExecutionError, with the cell and traceback, if any cell fails.
    NotebookClient(
        nb,
        kernel_name="python3",  # ipykernel of this interpreter (the venv)
        timeout=300,
        resources={"metadata": {"path": str(project)}},
    ).execute()

    reporting = project / "data" / "08_reporting"
    comparison = json.loads((reporting / "model_comparison.json").read_text())
    table = _output_text(_cell(nb, 'catalog.load("model_comparison")'))
    for model in comparison["models"]:  # teacher, baseline and every student form
        assert f"<th>{model['name']}</th>" in table, model["name"]

    figures = [
        base64.b64decode(output.data["image/png"])
        for cell in nb.cells
        for output in cell.get("outputs", [])
        if "image/png" in output.get("data", {})
    ]
    assert len(figures) == 1
    assert figures[0].startswith(b"\x89PNG") and len(figures[0]) > 10_000

    # Both MLflow runs of the copy: the one stopped at the gates, the resumed one.
    registered = json.loads(
        (project / "data/07_model_output/registered_student.json").read_text()
    )
    first = json.loads((reporting / "teacher_train_summary.json").read_text())
    runs = _output_text(_cell(nb, "mlflow.search_runs("))
    assert "runs of `distillery`" in runs
    assert first["run_id"] in runs and registered["run_id"] in runs

    registry = _output_text(_cell(nb, "client.search_model_versions("))
    assert registered["name"] in registry
    assert re.search(
        rf"<td>{registered['version']}</td>\s*<td>{registered['alias']}</td>", registry
    ), registry
