"""Every model form measured side by side with one Measurement."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from distillery.ml.compress.export import export_onnx
from distillery.ml.models.artifact import ClassifierArtifact
from distillery.ml.models.modeling import load_tokenizer
from distillery.ml.report.baseline import fit_baseline, save_baseline
from distillery.ml.report.comparison import (
    REFERENCE,
    SECONDARY_REFERENCES,
    Measurement,
    evaluate_model_forms,
    evaluate_onnx_forms,
    saved_size_bytes,
)

LABELS = ["negative", "positive"]
TEXTS = ["awful late flight", "great kind crew"] * 3
GOLD = ["negative", "positive"] * 3


class FakeTokenizer:
    def save_pretrained(self, folder: Path) -> None:
        Path(folder).mkdir(parents=True)
        (Path(folder) / "tokenizer.json").write_bytes(b"t" * 30)


def _save_two_files(path: Path) -> None:
    path.mkdir()
    (path / "weights").write_bytes(b"w" * 100)
    (path / "config").write_bytes(b"c" * 50)


def test_saved_size_bytes_counts_the_model_and_the_tokenizer() -> None:
    assert saved_size_bytes(_save_two_files, FakeTokenizer()) == 180
    assert saved_size_bytes(_save_two_files) == 150
    assert saved_size_bytes(tokenizer=FakeTokenizer()) == 30


class FakePredictor:
    """Predicts the label named by a text's first word ("awful" = negative)."""

    labels = LABELS

    def __init__(self, num_threads: int) -> None:
        self.num_threads = num_threads

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        negative = np.asarray([t.startswith("awful") for t in texts], dtype=float)
        return np.stack([negative, 1 - negative], axis=1)


def _measurement(num_threads: int = 1, scoring_threads: int = 1) -> Measurement:
    return Measurement(
        texts=TEXTS,
        y_true=GOLD,
        labels=LABELS,
        num_threads=num_threads,
        scoring_threads=scoring_threads,
        latency_repeats=2,
        warmup=1,
        throughput_batches=1,
        max_length=32,
        normalize=str.lower,
    )


@pytest.mark.parametrize(("scoring_threads", "built"), [(1, [1]), (2, [1, 2])])
def test_a_scorer_is_built_only_when_its_thread_count_differs(
    scoring_threads: int, built: list[int]
) -> None:
    threads: list[int] = []

    def build(count: int) -> FakePredictor:
        threads.append(count)
        return FakePredictor(count)

    measurement = _measurement(scoring_threads=scoring_threads)
    evaluation = measurement.evaluate("fake", "student", "onnx-int8", build, 99)

    assert threads == built
    assert (evaluation.name, evaluation.family, evaluation.form) == (
        "fake",
        "student",
        "onnx-int8",
    )
    assert evaluation.accuracy == 1.0 and evaluation.n_test == len(TEXTS)
    assert evaluation.size_bytes == 99 and evaluation.num_threads == 1
    assert evaluation.extra["scoring_threads"] == scoring_threads
    assert evaluation.extra["labels"] == LABELS


@pytest.fixture(scope="module")
def teacher(tiny_classifier: Callable[..., Any]) -> ClassifierArtifact:
    return ClassifierArtifact(
        tiny_classifier(LABELS, shape="teacher"), load_tokenizer("builtin")
    )


@pytest.fixture(scope="module")
def onnx_bytes(
    teacher: ClassifierArtifact, tmp_path_factory: pytest.TempPathFactory
) -> bytes:
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    return export_onnx(teacher.model, path, max_length=32).read_bytes()


def test_onnx_forms_are_fp32_then_int8_sized_with_the_tokenizer(
    teacher: ClassifierArtifact, onnx_bytes: bytes
) -> None:
    # The fp32 graph stands in for the int8 one: only the plumbing is under test.
    files = {"S.onnx": onnx_bytes, "S.int8.onnx": onnx_bytes, "T.onnx": b""}
    evaluations = evaluate_onnx_forms(
        _measurement(), "S", "student", files, teacher.tokenizer, 1000
    )

    assert [(e.name, e.form, e.family) for e in evaluations] == [
        ("S-onnx-fp32", "onnx-fp32", "student"),
        ("S-onnx-int8", "onnx-int8", "student"),
    ]
    assert {e.size_bytes for e in evaluations} == {len(onnx_bytes) + 1000}
    assert evaluations[0].confusion == evaluations[1].confusion


def test_onnx_forms_need_both_files(
    teacher: ClassifierArtifact, onnx_bytes: bytes
) -> None:
    files = {"S.onnx": onnx_bytes}
    with pytest.raises(KeyError, match="S.int8.onnx"):
        evaluate_onnx_forms(_measurement(), "S", "student", files, teacher.tokenizer, 0)


def test_every_form_is_evaluated_in_order_with_deployable_sizes(
    teacher: ClassifierArtifact, onnx_bytes: bytes
) -> None:
    baseline, _ = fit_baseline(TEXTS, GOLD, TEXTS, GOLD)
    files = {"teacher.onnx": onnx_bytes, "teacher.int8.onnx": onnx_bytes}
    student_files = {"S.onnx": onnx_bytes, "S.int8.onnx": onnx_bytes}

    evaluations = evaluate_model_forms(
        _measurement(),
        teacher=teacher,
        teacher_onnx=files,
        baseline_model=baseline,
        students={"S": teacher},  # the teacher stands in for a student
        student_onnx=student_files,
    )

    by_name = {e.name: e for e in evaluations}
    assert [(e.name, e.form) for e in evaluations] == [
        ("teacher", "torch-fp32"),
        (REFERENCE, "onnx-fp32"),
        (SECONDARY_REFERENCES[0], "onnx-int8"),
        ("baseline", "sklearn"),
        ("S-onnx-fp32", "onnx-fp32"),
        ("S-onnx-int8", "onnx-int8"),
    ]
    assert SECONDARY_REFERENCES[1] == "teacher"
    # The same weights predict alike in PyTorch and ONNX Runtime.
    assert by_name["teacher"].confusion == by_name[REFERENCE].confusion
    tokenizer_bytes = saved_size_bytes(tokenizer=teacher.tokenizer)
    assert by_name["S-onnx-int8"].size_bytes == len(onnx_bytes) + tokenizer_bytes
    assert by_name["teacher"].size_bytes == saved_size_bytes(
        teacher.model.save, teacher.tokenizer
    )
    assert by_name["baseline"].size_bytes == saved_size_bytes(
        lambda path: save_baseline(baseline, path)
    )
    assert {e.n_test for e in evaluations} == {len(TEXTS)}
