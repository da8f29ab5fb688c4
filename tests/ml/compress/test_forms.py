"""The ONNX forms of a classifier: file names, parity-checked fp32 and int8."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from distillery.ml.compress.export import read_metadata
from distillery.ml.compress.forms import (
    export_forms,
    onnx_file,
    read_onnx_files,
    validation_batches,
)
from distillery.ml.models.artifact import ClassifierArtifact
from distillery.ml.models.modeling import TextClassifier

LABELS = ["neg", "neu", "pos"]


def test_file_names_tell_the_forms_apart() -> None:
    assert onnx_file("L2-H64", "onnx-fp32") == "L2-H64.onnx"
    assert onnx_file("teacher", "onnx-int8") == "teacher.int8.onnx"


def test_validation_batches_pad_the_first_rows(
    make_frame: Callable[..., pd.DataFrame],
) -> None:
    frame = make_frame(11, seed=0)
    batches = validation_batches(frame, size=4, count=2)
    assert [len(b["input_ids"]) for b in batches] == [4, 4]
    assert all(set(b) == {"input_ids", "attention_mask"} for b in batches)
    longest = max(len(ids) for ids in frame["input_ids"].head(4))
    assert batches[0]["input_ids"].shape == (4, longest)
    assert batches[0]["attention_mask"].sum() == sum(
        len(ids) for ids in frame["input_ids"].head(4)
    )
    assert len(validation_batches(frame, size=4)) == 3  # all 11 rows


@pytest.fixture(scope="module")
def toy(tiny_classifier: Callable[..., TextClassifier]) -> ClassifierArtifact:
    return ClassifierArtifact(tiny_classifier(LABELS), tokenizer=None)


def test_both_forms_are_written_after_the_parity_check(
    toy: ClassifierArtifact, make_frame: Callable[..., pd.DataFrame], tmp_path: Path
) -> None:
    diff, sizes = export_forms("toy", toy, tmp_path, 32, make_frame(8, 0), 1e-4)
    assert 0 <= diff <= 1e-4
    assert set(read_onnx_files(tmp_path)) == {"toy.onnx", "toy.int8.onnx"}
    assert list(read_onnx_files(tmp_path)) == sorted(read_onnx_files(tmp_path))
    assert sizes and all(v > 0 for v in sizes.values())
    assert int(read_metadata(tmp_path / "toy.onnx")["max_length"]) == 32


def test_an_export_out_of_tolerance_is_refused(
    toy: ClassifierArtifact, make_frame: Callable[..., pd.DataFrame], tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError, match="differs from PyTorch"):
        export_forms("toy", toy, tmp_path, 32, make_frame(8, 0), -1.0)
    assert set(read_onnx_files(tmp_path)) == {"toy.onnx"}
