"""Compress nodes: cached teacher logits, distilled students, ONNX exports, the gate."""

from __future__ import annotations

import logging
import os
from typing import Any

import pandas as pd

from distillery.ml.compress.distill import SLICE_TEACHER, tokenize_for_students
from distillery.ml.compress.forms import TEACHER
from distillery.ml.compress.options import CompressOptions
from distillery.ml.compress.student_distillation import distill_recipes
from distillery.ml.compress.teacher_cache import distillation_rows, label_with_teacher
from distillery.ml.data.transfer import TextCleaning
from distillery.ml.models.artifact import ClassifierArtifact
from distillery.ml.report.evaluation import ModelEvaluation
from distillery.ml.report.explanations import (
    ExplainOptions,
    explain_release,
    explanation_metrics,
)
from distillery.ml.report.privacy import PrivacyOptions, audit_release
from distillery.ml.report.student_release import (
    release_tags,
    select_student_export,
    student_model_card,
    with_audits,
)
from distillery.ml.serve.form_scores import export_scored_forms, export_student_forms
from distillery.ml.serve.serving import log_and_register
from distillery.ml.serve.teacher_runtime import release_predictors, teacher_runtime
from distillery.ml.train.options import options_from_params
from distillery.tracking import as_metrics

logger = logging.getLogger(__name__)


def export_teacher(
    teacher_model: ClassifierArtifact,
    model_input_val: pd.DataFrame,
    compress_options: dict[str, Any],
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The teacher as a user would deploy it without distillery: ONNX Runtime fp32
    (graph-optimised) and ONNX Runtime dynamic int8, per channel (quantisation only).

    Evaluation measures both beside the students and the gates compare with them.

    Returns:
        ``{"teacher.onnx": bytes, "teacher.int8.onnx": bytes}`` and
        ``{"teacher": report}`` as :func:`export_students` reports each student.
    """
    options = CompressOptions.from_params(compress_options)
    check = model_input_val.sample(
        n=min(options.teacher_check_rows, len(model_input_val)),
        random_state=options.seed,
    )
    files, report = export_scored_forms(
        TEACHER, teacher_model, options.max_length, check, options.parity_tolerance
    )
    return files, {TEACHER: report}


def cache_teacher_logits(
    teacher_model: ClassifierArtifact,
    teacher_onnx: dict[str, bytes],
    teacher_export_report: dict[str, Any],
    model_input_train: pd.DataFrame,
    compress_options: dict[str, Any],
    model_input_val: pd.DataFrame | None = None,
    model_input_test: pd.DataFrame | None = None,
    preprocess: dict[str, Any] | None = None,
    validate: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """Compute the teacher's logits once for the distillation set (length-sorted batches).

    ``logits_source: auto`` uses the ONNX Runtime int8 teacher where it agrees with
    fp32 on ``min_int8_agreement`` of the checked validation rows (several times
    faster than PyTorch on a CPU). Students with their own backbone get the rows
    tokenised again with its tokenizer (same texts, same logits). A ``transfer_set``
    is cleaned as the corpus was (``preprocess``, ``validate``) and kept apart from
    the validation and test texts (:func:`distillation_rows`).

    Returns:
        The training rows (a seeded sample of ``distill_samples`` if set) and the
        pseudo-labelled transfer texts with ``teacher_logits`` (and ``teacher_pooled``
        when ``distill.kd_hidden_weight`` is set), tokenised for the students.
    """
    options = CompressOptions.from_params(compress_options)
    cleaning = TextCleaning.from_params(preprocess or {}, validate or {})
    evaluation = [s for s in (model_input_val, model_input_test) if s is not None]
    frame = distillation_rows(
        model_input_train, teacher_model.tokenizer, options, evaluation, cleaning
    )
    source = options.logits_source_for(teacher_export_report)
    pooled = options.caches_pooled
    with teacher_runtime(source, teacher_model, teacher_onnx, pooled=pooled) as teacher:
        frame = label_with_teacher(
            teacher,
            frame,
            batch_size=options.logits_batch_size,
            pooled=pooled,
            source=source,
        )
    backbone = options.student_backbone_for(teacher_model)
    return tokenize_for_students(frame, backbone, options.max_length)


def tokenize_student_val(
    teacher_model: ClassifierArtifact,
    model_input_val: pd.DataFrame,
    compress_options: dict[str, Any],
) -> pd.DataFrame:
    """The validation rows tokenised for the students (the same rows when they share
    the teacher's tokenizer); distillation and export score the students on them."""
    options = CompressOptions.from_params(compress_options)
    backbone = options.student_backbone_for(teacher_model)
    if backbone != SLICE_TEACHER:
        logger.info("Tokenising the validation split for students from %s", backbone)
    return tokenize_for_students(model_input_val, backbone, options.max_length)


def distill_students(
    teacher_model: ClassifierArtifact,
    distill_train: pd.DataFrame,
    student_input_val: pd.DataFrame,
    compress_options: dict[str, Any],
) -> tuple[dict[str, ClassifierArtifact], dict[str, Any], dict[str, Any]]:
    """Cut each student from the teacher (or from ``student_backbone`` when the
    teacher is not BERT-shaped) and distil it with the train stage's DDP loop
    (``loss: kd``) on the cached teacher logits.

    Returns:
        The distilled students by name, their MLflow metric curves and a summary.
    """
    options = CompressOptions.from_params(compress_options)
    return distill_recipes(teacher_model, distill_train, student_input_val, options)


def export_students(
    distilled_students: dict[str, ClassifierArtifact],
    student_input_val: pd.DataFrame,
    compress_options: dict[str, Any],
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """Export every student to ONNX (fp32, parity-checked) and ONNX Runtime int8.

    Returns:
        ``{"<name>.onnx": bytes, "<name>.int8.onnx": bytes}`` and a report per
        student: parity, int8-vs-fp32 agreement, validation macro-F1 of both, sizes.

    Raises:
        RuntimeError: if an fp32 export differs from PyTorch by more than the tolerance.
    """
    options = CompressOptions.from_params(compress_options)
    return export_student_forms(distilled_students, student_input_val, options)


def select_student(
    model_evaluations: list[dict[str, Any]],
    export_report: dict[str, Any],
    teacher_train_summary: dict[str, Any],
    compress_options: dict[str, Any],
) -> dict[str, Any]:
    """Pick the best student export on *validation* that passes every gate.

    Candidates are the ONNX forms. The choice and the F1 gate use validation
    macro-F1; size and latency are measured against ``gates.reference`` (the ONNX
    Runtime fp32 teacher by default). The test scores are only reported.

    Raises:
        GateError: no candidate passes; the message tables each candidate's ratios and
            missed gates, and nothing is registered.
    """
    options = CompressOptions.from_params(compress_options)
    return select_student_export(
        [ModelEvaluation.from_dict(e) for e in model_evaluations],
        export_report,
        float(teacher_train_summary["best_val_macro_f1"]),
        options.gates,
        options.students,
    )


def package_student(
    selected_student: dict[str, Any],
    student_onnx: dict[str, bytes],
    distilled_students: dict[str, ClassifierArtifact],
    preprocess: dict[str, Any],
) -> dict[str, Any]:
    """The serving bundle of the selected student: ONNX graph, its tokenizer (the
    teacher's, or its backbone's), normaliser."""
    return {
        "onnx": student_onnx[selected_student["file"]],
        "tokenizer": distilled_students[selected_student["variant"]].tokenizer,
        "normalize": {k: preprocess[k] for k in ("user_token", "url_token")},
    }


def register_student(
    student_onnx_bundle: str,
    selected_student: dict[str, Any],
    validation_summary: dict[str, Any],
    teacher_train_summary: dict[str, Any],
    registry: dict[str, Any],
) -> dict[str, Any]:
    """Register the bundle as an MLflow pyfunc and point the alias (``challenger``) at it,
    tagged with the data it and its teacher saw (scheduled retraining compares)."""
    tags = release_tags(selected_student, validation_summary, teacher_train_summary)
    info = log_and_register(
        student_onnx_bundle, registry["name"], registry["alias"], tags=tags
    )
    logger.info(
        "Registered %s version %s as @%s", info["name"], info["version"], info["alias"]
    )
    return info


def explain_student(
    student_onnx_bundle: str,
    teacher_onnx: dict[str, bytes],
    teacher_model: ClassifierArtifact,
    model_input_test: pd.DataFrame,
    explain_options: dict[str, Any],
) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """The student's word attributions on the test split, how faithful and how like
    its teacher's: ``explanations.json``, the HTML examples, MLflow metrics."""
    options = options_from_params(ExplainOptions, explain_options, "explain_options")
    with release_predictors(
        student_onnx_bundle, teacher_onnx, teacher_model.tokenizer, num_threads=_CORES
    ) as (student, teacher):
        report, page = explain_release(
            student,
            teacher,
            model_input_test["text"].tolist(),
            student.encoder.normalize,
            options,
        )
    return report, page, as_metrics(explanation_metrics(report))


def audit_privacy(
    student_onnx_bundle: str,
    teacher_onnx: dict[str, bytes],
    teacher_model: ClassifierArtifact,
    model_input_train: pd.DataFrame,
    model_input_test: pd.DataFrame,
    privacy_options: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Membership inference against the student and its teacher on the same training
    and test rows: ``privacy_audit.json`` and its MLflow metrics."""
    options = options_from_params(PrivacyOptions, privacy_options, "privacy_options")
    with release_predictors(
        student_onnx_bundle, teacher_onnx, teacher_model.tokenizer, num_threads=_CORES
    ) as (student, teacher):
        report = audit_release(
            {"student": student, "teacher": teacher},
            (model_input_train["text"].tolist(), model_input_train["label"].tolist()),
            (model_input_test["text"].tolist(), model_input_test["label"].tolist()),
            options,
        )
    metrics = {f"{name}_auc": report[name]["auc"] for name in ("student", "teacher")}
    return report, as_metrics(metrics)


_CORES = os.cpu_count() or 1  # the audits' predictions use every core; none is timed


def write_model_card(  # noqa: PLR0913 - the card gathers lineage from every stage
    selected_student: dict[str, Any],
    model_evaluations: list[dict[str, Any]],
    source_manifest: dict[str, Any],
    validation_summary: dict[str, Any],
    teacher_train_summary: dict[str, Any],
    registered_student: dict[str, Any],
    student_explanations: dict[str, Any],
    privacy_audit: dict[str, Any],
) -> str:
    """``model_card.md``: lineage, what each step cost and saved, use and limits; why
    the student decides as it does and what its training data may leak."""
    card = student_model_card(
        selected_student,
        [ModelEvaluation.from_dict(e) for e in model_evaluations],
        source_manifest,
        validation_summary,
        teacher_train_summary,
        registered_student,
    )
    return with_audits(card, student_explanations, privacy_audit, validation_summary)
