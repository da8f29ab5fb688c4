"""``kedro run --env large`` made tiny: the real 110M MPNet teacher, reassembled from
its five PyPI packages, through every stage.

conf/large's own settings (one process, 4 frozen blocks, its learning rate) stay; the
sizes come from conf/test, passed as ``--params``, so the run takes a few minutes.
The packages come with ``make test`` (the ``large`` extra).
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
import yaml

from distillery.ml.models.packaged import MARKER, PACKAGED_MODELS

pytestmark = pytest.mark.slow

CONF = Path(__file__).resolve().parents[2] / "conf"
KEEP_FROM_LARGE = {"train_options.nproc"}  # the large env's choice, not the tests'


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat |= _flat(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def _tiny_params() -> str:
    """conf/test's sizes as ``--params`` (a Kedro run has one environment)."""
    tiny = _flat(yaml.safe_load((CONF / "test" / "parameters.yml").read_text()))
    return ",".join(f"{k}={v}" for k, v in tiny.items() if k not in KEEP_FROM_LARGE)


def _installed() -> bool:
    try:
        for piece in PACKAGED_MODELS["mpnet-base"].pieces:
            metadata.distribution(piece.package)
    except metadata.PackageNotFoundError:
        return False
    return True


@pytest.mark.skipif(
    not _installed(), reason="pip install -e '.[large]' (make test does)"
)
def test_tiny_large_run_fine_tunes_mpnet_and_registers_a_student(
    project: Path, kedro_runner
) -> None:
    done = kedro_runner(
        project, "--params", _tiny_params(), timeout=1500, env_name="large"
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]

    pretrained = project / "data/06_models/pretrained/all-mpnet-base-v2"
    assert (pretrained / MARKER).is_file()  # reassembled in the project on first use
    reporting = project / "data" / "08_reporting"
    summary = json.loads((reporting / "teacher_train_summary.json").read_text())
    assert summary["config"]["model_name_or_path"] == "mpnet-base"
    assert summary["config"]["freeze_layers"] == 4
    assert summary["world_size"] == 1
    saved = next((project / "data/06_models").glob("teacher/*/*/config.json"))
    config = json.loads(saved.read_text())
    assert (
        config["model_type"],
        config["hidden_size"],
        config["num_hidden_layers"],
    ) == (
        "mpnet",
        768,
        12,
    )
    # MPNet is not BERT-shaped: students start from the packaged MiniLM.
    distill = json.loads((reporting / "distill_summary.json").read_text())
    assert distill["student_backbone"] == "builtin"
    comparison = json.loads((reporting / "model_comparison.json").read_text())
    sizes = {m["name"]: m["size_bytes"] for m in comparison["models"]}
    assert {"teacher", "teacher-onnx-fp32", "teacher-onnx-int8", "baseline"} <= set(
        sizes
    )
    selected = json.loads(
        (project / "data/07_model_output/selected_student.json").read_text()
    )
    # The int8 MPNet is over 100 MB; the registered student a few MB.
    assert sizes["teacher-onnx-int8"] > 25 * sizes[selected["name"]]
    registered = json.loads(
        (project / "data/07_model_output/registered_student.json").read_text()
    )
    assert registered["name"] == "distillery-student"
