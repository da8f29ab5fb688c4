"""Cutting students from their source and distilling them with the real loop."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from distillery.ml.compress.distill import StudentRecipe
from distillery.ml.compress.student_distillation import (
    StudentSource,
    distill_student,
    student_curves,
    student_source,
    student_summary,
)
from distillery.ml.data.text import tokenize_partition
from distillery.ml.models.artifact import ClassifierArtifact
from distillery.ml.models.modeling import TextClassifier, load_tokenizer
from distillery.ml.train.config import TrainConfig, TrainResult

LABELS = ["neg", "neu", "pos"]


def _result(model_dir: str) -> TrainResult:
    return TrainResult(
        model_dir=model_dir,
        step_history=[
            {"step": 1.0, "train_loss": 0.9, "lr": 1e-3, "samples_per_s": 5.0},
            {"step": 2.0, "train_loss": 0.7, "lr": 1e-3, "samples_per_s": 5.0},
        ],
        epoch_history=[{"epoch": 1.0, "step": 2.0, "val_macro_f1": 0.6}],
        best_epoch=1,
        best_val_macro_f1=0.6,
        resumed_from_step=None,
        samples_per_s=5.0,
        wall_s=1.5,
        train_samples=16,
        world_size=1,
        stopped_early=False,
    )


def test_the_vocabulary_is_counted_on_the_training_texts_only(
    tiny_classifier: Callable[..., TextClassifier],
) -> None:
    tokenizer = load_tokenizer("builtin")
    teacher = ClassifierArtifact(tiny_classifier(LABELS, "teacher"), tokenizer)
    texts = pd.DataFrame({"text": ["great crew", "late flight"], "source_row": [0, 1]})
    copies = texts.assign(text=["zebra", "zebra"])
    rows = pd.concat(
        [
            tokenize_partition(t.assign(label="neg"), "builtin", 16, {"neg": 0})
            for t in (texts, copies)
        ],
        ignore_index=True,
    ).assign(augmented=[False, False, True, True])

    source = student_source(teacher, "teacher", rows, vocab_min_count=1)

    assert source.model is teacher.model and source.tokenizer is tokenizer
    assert source.backbone == "teacher"
    assert tokenizer.convert_tokens_to_ids("great") in source.keep_ids
    assert tokenizer.convert_tokens_to_ids("zebra") not in source.keep_ids
    assert set(tokenizer.all_special_ids) <= set(source.keep_ids)
    assert len(source.sample) == len(rows)


@pytest.fixture
def toy_source(tiny_classifier: Callable[..., TextClassifier]) -> StudentSource:
    return StudentSource(
        backbone="teacher",
        model=tiny_classifier(LABELS),
        tokenizer=SimpleNamespace(unk_token_id=1),
        keep_ids=[0, 1, 2, 3, *range(5, 70)],
        sample=pd.DataFrame(),
    )


def test_a_student_is_cut_saved_and_distilled_from_its_init(
    toy_source: StudentSource,
    base_config: TrainConfig,
    make_frame: Callable[..., pd.DataFrame],
    tmp_path: Path,
) -> None:
    config = replace(base_config, loss="kd", kd_alpha=0.9, epochs=1)
    train = make_frame(32, seed=1, with_teacher=True)
    val = make_frame(12, seed=2)
    recipe = StudentRecipe(name="s", num_layers=1)

    student, result = distill_student(
        toy_source, recipe, config, train, val, LABELS, tmp_path / "s"
    )

    # The initial cut is kept beside the training outputs, and training started
    # from it: one layer, the kept vocabulary, the source's tokenizer.
    initial = TextClassifier.load(tmp_path / "s" / "init")
    assert initial.config.num_hidden_layers == 1
    assert student.model.config.num_hidden_layers == 1
    assert student.model.config.vocab_size == len(toy_source.keep_ids)
    assert student.tokenizer is toy_source.tokenizer
    assert result.world_size == 1 and result.best_epoch == 1
    assert len(result.step_history) == len(train) // config.batch_size
    # Distillation moved the weights away from the cut.
    trained, cut = student.model.state_dict(), initial.state_dict()
    assert any(not torch.equal(trained[k], cut[k]) for k in cut)


def test_curves_and_summary_of_one_student(
    tiny_classifier: Callable[..., TextClassifier], base_config: TrainConfig
) -> None:
    result = _result("unused")
    curves = student_curves("s", result)
    assert curves == {
        "s.train_loss": [{"step": 1, "value": 0.9}, {"step": 2, "value": 0.7}],
        "s.val_macro_f1": [{"step": 1, "value": 0.6}],
    }
    recipe = StudentRecipe(name="s", num_layers=1, distill={"epochs": 3})
    model = tiny_classifier(LABELS)
    summary = student_summary(
        recipe, base_config, ClassifierArtifact(model, None), result
    )
    assert "distill" not in summary["recipe"] and summary["recipe"]["num_layers"] == 1
    assert summary["config"] == base_config.to_dict()
    assert summary["parameters"] == sum(p.numel() for p in model.parameters())
    assert summary["best_val_macro_f1"] == 0.6 and summary["wall_s"] == 1.5
