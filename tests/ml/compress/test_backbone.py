"""Where students start: sliced from a BERT-shaped teacher, or their own backbone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from transformers import AutoConfig

from distillery.ml.compress.distill import (
    load_student_backbone,
    resolve_student_backbone,
)


@pytest.mark.parametrize(
    ("backbone", "family", "expected"),
    [
        ("auto", "bert", "teacher"),
        ("auto", "roberta", "builtin"),
        ("auto", "qwen2", "builtin"),
        ("teacher", "bert", "teacher"),
        ("builtin", "bert", "builtin"),
        ("/models/minilm", "deberta-v2", "/models/minilm"),
    ],
)
def test_backbone_follows_the_teacher_shape(
    backbone: str, family: str, expected: str
) -> None:
    config = AutoConfig.for_model(family)
    assert resolve_student_backbone(backbone, config) == expected


@pytest.mark.parametrize("backbone", ["teacher", ""])
def test_a_backbone_that_cannot_work_is_refused(backbone: str) -> None:
    with pytest.raises(ValueError, match="student_backbone"):
        resolve_student_backbone(backbone, AutoConfig.for_model("modernbert"))


def test_a_backbone_must_be_bert_shaped(
    tiny_family_dir: Callable[[str], Path],
) -> None:
    folder = tiny_family_dir("bert")
    assert load_student_backbone(str(folder), ["a", "b"]).config.model_type == "bert"
    with pytest.raises(ValueError, match="students are cut from one of"):
        load_student_backbone(str(tiny_family_dir("qwen2")), ["a", "b"])
