"""Teachers of other families through the stages: a decoder end to end with
``kedro run --env test --params teacher_model=DIR,train_options.strategy=fsdp``, and
encoders (RoBERTa, DeBERTa-v2, ModernBERT, and Qwen2 again under DDP) through the train
and compress nodes in process.

A full ``kedro run --env test`` took 150-180 s for the decoder on 2 cores shared with
other jobs (Kedro's start, two gloo ranks, ONNX exports, evaluation), too much to
repeat per family; the encoders (40-80 s each) reuse the decoder run's preprocessed corpus,
tokenised again with their own tokenizer, and run the very node functions
``kedro run`` runs (two gloo ranks for the teacher), with the test environment's
parameters.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from kedro.config import OmegaConfigLoader

from distillery.datasets import AtomicParquetDataset
from distillery.ml.data.text import load_encoder, retokenize_frame
from distillery.pipelines.compress.nodes import (
    cache_teacher_logits,
    distill_students,
    export_students,
    export_teacher,
    tokenize_student_val,
)
from distillery.pipelines.train.nodes import train_teacher
from distillery.settings import CONFIG_LOADER_ARGS

pytestmark = pytest.mark.slow

# A random 32-wide teacher is far smaller and faster than any MiniLM student: the
# size and latency gates compare with it, so they are opened here (quality gates are
# already open in the test environment).
OPEN_GATES = (
    "compress_options.gates.min_size_ratio=0.001,"
    "compress_options.gates.min_latency_ratio=0.001"
)


# The decoder's full run trains with FSDP2 (the default teacher's full run, in
# test_full_run.py, with DDP); the in-process runs cover both strategies on the other
# shapes and DDP on the decoder (a full run per family and strategy would cost minutes
# each).
STRATEGY = {"strategy": "fsdp"}


@dataclass(frozen=True)
class FamilyRun:
    teacher: Path
    project: Path
    output: str
    returncode: int


@pytest.fixture(scope="module")
def decoder_run(
    tiny_family_dir: Callable[[str], Path],
    project_factory: Callable[[str], Path],
    kedro_runner: Callable[..., subprocess.CompletedProcess],
) -> FamilyRun:
    teacher = tiny_family_dir("qwen2")
    project = project_factory("qwen2_run")
    params = f"teacher_model={teacher},{OPEN_GATES}"
    params += "".join(f",train_options.{k}={v}" for k, v in STRATEGY.items())
    done = kedro_runner(project, "--params", params, timeout=1500)
    return FamilyRun(teacher, project, done.stdout + done.stderr, done.returncode)


def test_a_decoder_teacher_runs_every_stage(decoder_run: FamilyRun) -> None:
    assert decoder_run.returncode == 0, decoder_run.output[-4000:]
    reporting = decoder_run.project / "data" / "08_reporting"
    summary = json.loads((reporting / "teacher_train_summary.json").read_text())
    assert summary["config"]["model_name_or_path"] == str(decoder_run.teacher)
    assert summary["config"]["pooling"] == "auto"
    assert summary["config"]["strategy"] == "fsdp"
    assert summary["world_size"] == 2
    models = decoder_run.project / "data" / "06_models"
    classifier = json.loads(
        next(models.glob("teacher/*/*/classifier.json")).read_text()
    )
    assert classifier["pooling"] == "last"
    teacher_export = json.loads((reporting / "teacher_export_report.json").read_text())
    assert teacher_export["teacher"]["parity_max_abs_diff"] <= 1e-4
    # Students start from the packaged MiniLM with its own tokenizer.
    distill = json.loads((reporting / "distill_summary.json").read_text())
    assert distill["student_backbone"] == "builtin"
    export = json.loads((reporting / "export_report.json").read_text())
    assert export["L2-H256"]["parity_max_abs_diff"] <= 1e-4
    comparison = json.loads((reporting / "model_comparison.json").read_text())
    assert {m["name"] for m in comparison["models"]} >= {
        "teacher",
        "teacher-onnx-int8",
        "L2-H256-onnx-int8",
    }
    # The model card names the teacher's folder; the student is registered.
    assert str(decoder_run.teacher) in (reporting / "model_card.md").read_text()
    client = mlflow.MlflowClient(
        tracking_uri=f"sqlite:///{decoder_run.project / 'mlflow.db'}"
    )
    version = client.get_model_version_by_alias("distillery-student", "challenger")
    assert int(version.version) == 1
    tokenizer_config = next(models.glob("student_onnx/**/tokenizer_config.json"))
    assert "[CLS]" in tokenizer_config.read_text()  # the student's, not Qwen2's


@pytest.mark.parametrize(
    ("family", "strategy"),
    [
        ("roberta", "ddp"),
        ("deberta-v2", "fsdp"),
        ("modernbert", "fsdp"),
        ("qwen2", "ddp"),
    ],
)
def test_a_teacher_trains_and_compresses_in_process(
    family: str,
    strategy: str,
    decoder_run: FamilyRun,
    tiny_family_dir: Callable[[str], Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert decoder_run.returncode == 0, "the decoder run prepares the corpus"
    teacher_dir = tiny_family_dir(family)
    args = CONFIG_LOADER_ARGS | {"default_run_env": "test"}
    params = OmegaConfigLoader(
        str(decoder_run.project / "conf"),
        runtime_params={"teacher_model": str(teacher_dir)},
        **args,
    )["parameters"]
    inputs = decoder_run.project / "data" / "05_model_input"
    encoder = load_encoder(str(teacher_dir), params["preprocess"]["max_length"])
    # What preprocess writes for this teacher: the same texts in its tokens.
    train, val = (
        retokenize_frame(
            AtomicParquetDataset(filepath=str(inputs / split)).load(), encoder
        )
        for split in ("train", "val")
    )
    label_vocab = json.loads((inputs / "label_vocab.json").read_text())
    monkeypatch.chdir(tmp_path)  # the workdirs are relative to the project

    teacher, _, summary, _ = train_teacher(
        train, val, label_vocab, params["train_options"] | {"strategy": strategy}
    )
    compress = params["compress_options"]
    teacher_onnx, teacher_report = export_teacher(teacher, val, compress)
    distill_train = cache_teacher_logits(
        teacher, teacher_onnx, teacher_report, train, compress
    )
    student_val = tokenize_student_val(teacher, val, compress)
    students, _, distill = distill_students(
        teacher, distill_train, student_val, compress
    )
    _, report = export_students(students, student_val, compress)

    assert summary["world_size"] == 2
    assert teacher.model.config.model_type == family
    assert teacher.model.pooling == ("last" if family == "qwen2" else "mean")
    assert summary["config"]["strategy"] == strategy
    assert teacher_report["teacher"]["parity_max_abs_diff"] <= 1e-4
    assert distill["student_backbone"] == "builtin"
    assert len(distill_train) == compress["distill_samples"]
    assert report["L2-H256"]["parity_max_abs_diff"] <= 1e-4
