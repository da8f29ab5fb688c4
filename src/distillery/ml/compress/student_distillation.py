"""Build every student recipe and distil it with the train stage's loop.

Students are cut (pruned vocabulary, kept layers and width) from the teacher, or from
their own backbone when the teacher is not BERT-shaped; each is then trained with
``loss: kd`` on the cached teacher logits (:mod:`distillery.ml.compress.teacher_cache`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from distillery.ml.compress.distill import (
    SLICE_TEACHER,
    StudentRecipe,
    load_student_backbone,
    make_student,
    vocabulary_to_keep,
)
from distillery.ml.compress.options import CompressOptions
from distillery.ml.compress.teacher_cache import AUGMENTED, TRANSFER
from distillery.ml.models.artifact import ClassifierArtifact
from distillery.ml.models.modeling import TextClassifier, load_tokenizer
from distillery.ml.train.config import RankZeroElsewhere, TrainConfig, TrainResult
from distillery.ml.train.launch import launch_training

logger = logging.getLogger(__name__)

RANKING_ROWS = 256  # rows whose activations rank hidden coordinates for narrow students


@dataclass(frozen=True)
class StudentSource:
    """What every student is cut from.

    Attributes:
        backbone: ``teacher`` or the backbone loaded (a name or path).
        model: The teacher, or the backbone with a new head (eval mode).
        tokenizer: The tokenizer the students read with.
        keep_ids: Token ids the pruned vocabulary keeps.
        sample: Training rows that rank hidden coordinates for narrower students.
    """

    backbone: str
    model: TextClassifier
    tokenizer: Any
    keep_ids: list[int]
    sample: pd.DataFrame


def student_source(
    teacher: ClassifierArtifact,
    backbone: str,
    distill_train: pd.DataFrame,
    vocab_min_count: int,
) -> StudentSource:
    """The model, tokenizer and vocabulary the students are cut from.

    Args:
        teacher: The fine-tuned teacher.
        backbone: ``teacher`` or a BERT-shaped encoder to load
            (:func:`~distillery.ml.compress.distill.resolve_student_backbone`).
        distill_train: The distillation set, tokenised for the students.
        vocab_min_count: Fewest occurrences of a token id for it to be kept.

    Returns:
        The source; its vocabulary is counted on the training texts only, because
        dropped-word copies would count each id again.

    Raises:
        ValueError: if the backbone is not BERT-shaped.
    """
    if backbone == SLICE_TEACHER:
        model, tokenizer = teacher.model.eval(), teacher.tokenizer
    else:
        model = load_student_backbone(backbone, teacher.labels)
        tokenizer = load_tokenizer(backbone)
        logger.info(
            "Students start from %s with its own tokenizer (the teacher is a %s)",
            backbone,
            teacher.model.config.model_type,
        )
    original = distill_train
    if AUGMENTED in distill_train.columns:
        original = distill_train[~distill_train[AUGMENTED]]
    keep_ids = vocabulary_to_keep(original["input_ids"], tokenizer, vocab_min_count)
    return StudentSource(
        backbone, model, tokenizer, keep_ids, distill_train.head(RANKING_ROWS)
    )


def distill_student(
    source: StudentSource,
    recipe: StudentRecipe,
    config: TrainConfig,
    distill_train: pd.DataFrame,
    student_val: pd.DataFrame,
    labels: list[str],
    workdir: Path,
) -> tuple[ClassifierArtifact, TrainResult]:
    """Cut one student from ``source`` and distil it.

    Args:
        source: What the student is cut from (:func:`student_source`).
        recipe: The student's depth, width and overrides.
        config: Its KD training settings.
        distill_train: The distillation set with cached teacher logits.
        student_val: Validation rows tokenised for the students.
        labels: The label vocabulary.
        workdir: The student's folder: ``init/`` (before distillation) and the
            training outputs.

    Returns:
        The distilled student (best validation epoch) and rank 0's training result.

    Raises:
        RankZeroElsewhere: on a node whose ranks finished while global rank 0, which
            keeps the student, ran on another machine.
    """
    initial = make_student(
        source.model,
        recipe,
        source.keep_ids,
        source.tokenizer.unk_token_id,
        sample=source.sample,
        max_length=config.max_length,
    )
    init_dir = workdir / "init"
    initial.save(init_dir)
    result = launch_training(
        config,
        distill_train,
        student_val,
        labels,
        workdir,
        init_model_dir=str(init_dir),
    )
    if result is None:
        logger.info(
            "This machine's ranks finished distilling %s. Global rank 0 ran on "
            "another machine, which keeps the students; this run stops with exit "
            "status 0.",
            recipe.name,
        )
        raise RankZeroElsewhere
    logger.info(
        "Student %s: val macro-F1 %.4f (epoch %d), %.0f samples/s",
        recipe.name,
        result.best_val_macro_f1,
        result.best_epoch,
        result.samples_per_s,
    )
    student = ClassifierArtifact(
        TextClassifier.load(result.model_dir), source.tokenizer
    )
    return student, result


def student_curves(name: str, result: TrainResult) -> dict[str, list[dict[str, float]]]:
    """One student's metric curves, as MLflow metric histories.

    Args:
        name: The student's name; it prefixes the metric names.
        result: Its training result.

    Returns:
        ``<name>.train_loss`` per optimizer step and ``<name>.val_macro_f1`` per
        epoch, each a list of ``{"step", "value"}``.
    """
    return {
        f"{name}.train_loss": [
            {"step": int(r["step"]), "value": r["train_loss"]}
            for r in result.step_history
        ],
        f"{name}.val_macro_f1": [
            {"step": int(r["epoch"]), "value": r["val_macro_f1"]}
            for r in result.epoch_history
        ],
    }


def student_summary(
    recipe: StudentRecipe,
    config: TrainConfig,
    student: ClassifierArtifact,
    result: TrainResult,
) -> dict[str, Any]:
    """What one distillation built and how it went, in plain types.

    Args:
        recipe: The student's recipe.
        config: Its training settings.
        student: The distilled student.
        result: Its training result.

    Returns:
        The recipe (without its ``distill`` overrides, which ``config`` holds), the
        config, the parameter count and the training outcome.
    """
    return {
        "recipe": {k: v for k, v in recipe.__dict__.items() if k != "distill"},
        "config": config.to_dict(),
        "parameters": sum(p.numel() for p in student.model.parameters()),
        "best_val_macro_f1": result.best_val_macro_f1,
        "best_epoch": result.best_epoch,
        "samples_per_s": result.samples_per_s,
        "wall_s": result.wall_s,
        "resumed_from_step": result.resumed_from_step,
    }


def distill_recipes(
    teacher: ClassifierArtifact,
    distill_train: pd.DataFrame,
    student_val: pd.DataFrame,
    options: CompressOptions,
) -> tuple[dict[str, ClassifierArtifact], dict[str, Any], dict[str, Any]]:
    """Build and distil every student of ``options.students``, in order.

    Args:
        teacher: The fine-tuned teacher.
        distill_train: The distillation set, tokenised for the students, with
            cached teacher logits.
        student_val: Validation rows tokenised for the students.
        options: The compress options.

    Returns:
        The distilled students by name, their non-empty metric curves (and a
        transfer set's counts, :func:`transfer_metrics`) and a summary (backbone,
        vocabulary kept, distillation rows, the transfer set's summary when one was
        used, one :func:`student_summary` per student).

    Raises:
        RankZeroElsewhere: on a node that does not host global rank 0.
    """
    backbone = options.student_backbone_for(teacher)
    source = student_source(teacher, backbone, distill_train, options.vocab_min_count)
    students: dict[str, ClassifierArtifact] = {}
    curves: dict[str, list[dict[str, float]]] = {}
    summaries: dict[str, Any] = {}
    for recipe in options.students:
        config = options.train_config(recipe)
        student, result = distill_student(
            source,
            recipe,
            config,
            distill_train,
            student_val,
            teacher.labels,
            Path(options.workdir) / recipe.name,
        )
        students[recipe.name] = student
        curves |= student_curves(recipe.name, result)
        summaries[recipe.name] = student_summary(recipe, config, student, result)
    summary = {
        "student_backbone": backbone,
        "vocabulary_kept": len(source.keep_ids),
        "rows": len(distill_train),
        "students": summaries,
    }
    if TRANSFER in distill_train.attrs:
        summary[TRANSFER] = distill_train.attrs[TRANSFER]
        curves |= transfer_metrics(summary[TRANSFER])
    return students, {k: v for k, v in curves.items() if v}, summary


def transfer_metrics(summary: dict[str, Any]) -> dict[str, list[dict[str, float]]]:
    """A transfer set's counts as MLflow metrics (one step each).

    Args:
        summary: The set's summary (``counts``), from the distillation set's attrs.

    Returns:
        ``transfer.<count>`` (``rows_in``, ``kept``, ``dropped_<reason>``).
    """
    return {
        f"{TRANSFER}.{name}": [{"step": 0, "value": float(value)}]
        for name, value in summary["counts"].items()
    }
