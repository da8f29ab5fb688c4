"""End to end: every stage of `kedro run --env test` on the real corpus and teacher."""

import json
import os
import subprocess
import sys

import mlflow
import pytest

pytestmark = pytest.mark.slow


def test_kedro_run_all_stages_registers_a_student(full_run) -> None:
    # First with a gate no student can pass: the run fails at the gate, registers
    # nothing, and Kedro says from which node to resume.
    project, failed = full_run.project, full_run.failed
    output = failed.stdout + failed.stderr
    assert failed.returncode != 0
    assert "GateError" in output and "size_ratio" in output
    assert not full_run.bundle_after_failure
    assert full_run.resume_nodes is not None, output[-3000:]

    # Resuming reuses every persisted output (no retraining) and completes.
    done = full_run.resumed
    assert done is not None
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "train_teacher_node" not in done.stdout + done.stderr

    reporting = project / "data" / "08_reporting"
    comparison = json.loads((reporting / "model_comparison.json").read_text())
    names = {m["name"] for m in comparison["models"]}
    assert names == {
        "teacher",
        "teacher-onnx-fp32",
        "teacher-onnx-int8",
        "baseline",
        "L2-H256-onnx-fp32",
        "L2-H256-onnx-int8",
    }
    assert comparison["reference"] == "teacher-onnx-fp32"
    search = json.loads((reporting / "baseline_search.json").read_text())
    assert len(search) == 2 and all(0 <= r["val_macro_f1"] <= 1 for r in search)
    for path in ("model_comparison.md", "confusion_matrices.png", "model_tradeoff.png"):
        assert (reporting / path).stat().st_size > 0, path
    card = (reporting / "model_card.md").read_text()
    sha = json.loads((project / "data/01_raw/source_manifest.json").read_text())[
        "sha256"
    ]
    assert sha in card
    assert "| teacher-onnx-int8 |" in card  # the comparison table, peers included
    export = json.loads((reporting / "export_report.json").read_text())
    assert export["L2-H256"]["parity_max_abs_diff"] <= 1e-4
    teacher_export = json.loads((reporting / "teacher_export_report.json").read_text())
    assert teacher_export["teacher"]["parity_max_abs_diff"] <= 1e-4

    # The teacher came from the real packaged encoder, fine-tuned by two gloo ranks.
    summary = json.loads((reporting / "teacher_train_summary.json").read_text())
    assert summary["world_size"] == 2
    assert summary["config"]["model_name_or_path"] == "builtin"
    assert summary["run_id"] in card

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    version = client.get_model_version_by_alias("distillery-student", "challenger")
    assert int(version.version) == 1
    assert "wall_s.compress" in client.get_run(version.run_id).data.metrics
    # The first (failed) run trained and evaluated: its metrics are in MLflow.
    first = client.get_run(summary["run_id"])
    assert first.info.status == "FAILED"
    assert first.data.metrics["eval.teacher.macro_f1"] > 0
    assert "teacher.train_loss" in first.data.metrics

    # The serving bundle answers raw text from the command line.
    env = os.environ | {"COLUMNS": "200"}
    answer = subprocess.run(
        [sys.executable, "-m", "distillery.predict", "--json", "what a lovely flight"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    record = json.loads(answer.stdout.splitlines()[0])
    assert record["label"] in {"negative", "neutral", "positive"}


def test_the_release_explains_its_student_and_audits_its_privacy(full_run) -> None:
    project = full_run.project
    assert full_run.resumed is not None and full_run.resumed.returncode == 0
    reporting = project / "data" / "08_reporting"
    card = (reporting / "model_card.md").read_text()
    # Why the student decides as it does, and what its training data may leak.
    explained = json.loads((reporting / "explanations.json").read_text())
    assert explained["texts"] == explained["deletion"]["texts"] > 0
    assert 0 <= explained["agreement"]["top_k_overlap"] <= 1
    assert len(explained["examples"]) == 5
    page = (reporting / "explanations.html").read_text()
    assert page.count("<p><b>") == 5
    privacy = json.loads((reporting / "privacy_audit.json").read_text())
    assert {"student", "teacher"} <= set(privacy)
    assert all(0 <= privacy[m]["auc"] <= 1 for m in ("student", "teacher"))
    assert "## Why it decides as it does" in card and "(explanations.html)" in card
    assert "## Privacy" in card and "replaced by placeholders before training" in card
    validation = json.loads((reporting / "validation_summary.json").read_text())
    assert {f"pii.{kind}" for kind in ("email", "phone", "card", "ip")} <= set(
        validation["counts"]
    )
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    version = client.get_model_version_by_alias("distillery-student", "challenger")
    released = client.get_run(version.run_id).data.metrics
    assert {"explain.deletion_auc_gain", "privacy.student_auc"} <= set(released)
