"""Releasing a student: the gated choice on validation, its registry tags and its card.

Candidates are the students' ONNX forms (what gets served). The choice and the F1
gate use validation macro-F1; the test scores are only reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from distillery.ml.compress.distill import StudentRecipe
from distillery.ml.compress.forms import ONNX_FORMS, TEACHER, onnx_file
from distillery.ml.report.evaluation import Gates, ModelEvaluation, ratios, select_best
from distillery.ml.report.explanations import explanations_markdown
from distillery.ml.report.privacy import privacy_markdown
from distillery.ml.report.reporting import (
    comparison_table_markdown,
    model_card_markdown,
)
from distillery.ml.serve.registry import data_tags

DEFAULT_REFERENCE = f"{TEACHER}-onnx-fp32"  # what one deploys without distillery


def select_student_export(
    evaluations: Sequence[ModelEvaluation],
    export_report: dict[str, Any],
    teacher_val_f1: float,
    gates: dict[str, Any],
    recipes: Sequence[StudentRecipe],
) -> dict[str, Any]:
    """Pick the best student export on validation that passes every gate.

    Args:
        evaluations: Test-split evaluations of every model and form.
        export_report: Per student, its forms' ``val_macro_f1``
            (:func:`~distillery.ml.serve.form_scores.export_scored_forms`).
        teacher_val_f1: The fine-tuned teacher's validation macro-F1.
        gates: ``compress_options.gates``: the thresholds of :class:`Gates` and
            optionally ``reference``, the evaluation that size and latency are
            measured against (default the teacher in ONNX Runtime fp32).
        recipes: The students' recipes.

    Returns:
        The choice: ``name``, ``variant``, ``form``, ``file``, ``reference``, its and
        the teacher's validation macro-F1, ``ratios``, ``gates``, its ``evaluation``
        and ``recipe``.

    Raises:
        GateError: no candidate passes; the message tables each candidate's ratios
            and missed gates.
    """
    thresholds = dict(gates)
    reference_name = thresholds.pop("reference", DEFAULT_REFERENCE)
    reference = next(e for e in evaluations if e.name == reference_name)
    candidates = [
        e for e in evaluations if e.family == "student" and e.form in ONNX_FORMS
    ]
    val_f1 = {
        e.name: export_report[e.name.removesuffix(f"-{e.form}")]["val_macro_f1"][e.form]
        for e in candidates
    }
    chosen = select_best(
        candidates, reference, Gates(**thresholds), val_f1, teacher_val_f1
    )
    variant = chosen.name.removesuffix(f"-{chosen.form}")
    return {
        "name": chosen.name,
        "variant": variant,
        "form": chosen.form,
        "file": onnx_file(variant, chosen.form),
        "reference": reference_name,
        "val_macro_f1": val_f1[chosen.name],
        "teacher_val_macro_f1": teacher_val_f1,
        "ratios": ratios(chosen, reference),
        "gates": gates,
        "evaluation": chosen.to_dict(),
        "recipe": next(r.__dict__ for r in recipes if r.name == variant),
    }


def release_tags(
    selected_student: dict[str, Any],
    validation_summary: dict[str, Any],
    teacher_train_summary: dict[str, Any],
) -> dict[str, str]:
    """The registry tags of a released student.

    Args:
        selected_student: :func:`select_student_export`'s choice.
        validation_summary: The validated corpus' ``sha256`` and ``profile``.
        teacher_train_summary: The teacher's training summary; its data profile,
            if recorded, is what scheduled retraining compares the next corpus with.

    Returns:
        Variant, form, each ratio to 4 decimals and the data tags
        (:func:`~distillery.ml.serve.registry.data_tags`).
    """
    return {
        "variant": selected_student["variant"],
        "form": selected_student["form"],
        **{k: f"{v:.4f}" for k, v in selected_student["ratios"].items()},
        **data_tags(
            validation_summary["sha256"],
            validation_summary["profile"],
            teacher_train_summary.get("data", {}).get("profile"),
        ),
    }


def student_model_card(
    selected_student: dict[str, Any],
    evaluations: Sequence[ModelEvaluation],
    source_manifest: dict[str, Any],
    validation_summary: dict[str, Any],
    teacher_train_summary: dict[str, Any],
    registered_student: dict[str, Any],
) -> str:
    """``model_card.md`` of the released student.

    Args:
        selected_student: :func:`select_student_export`'s choice.
        evaluations: Test-split evaluations of every model and form.
        source_manifest: The raw corpus' path, package, ``sha256`` and rows.
        validation_summary: The validation stage's ``counts``.
        teacher_train_summary: The teacher's run, config and validation score.
        registered_student: The registered version.

    Returns:
        Markdown: lineage, what each step cost and saved, use and limits (peers
        other than the chosen variant's forms left out), then a table of every
        form and peer and the trade-off figure.
    """
    variant = selected_student["variant"]
    peers = [
        e
        for e in evaluations
        if e.family != "student" or e.name.startswith(f"{variant}")
    ]
    teacher_eval = next(e for e in peers if e.name == TEACHER)
    card = model_card_markdown(
        corpus={
            "path": source_manifest["path"],
            "package": source_manifest.get("package"),
            "sha256": source_manifest["sha256"],
            "rows": source_manifest["rows"],
        },
        validation=validation_summary["counts"],
        teacher=_teacher_lineage(teacher_train_summary, teacher_eval),
        student={
            "name": selected_student["name"],
            "form": selected_student["form"],
            "config": selected_student["recipe"],
        },
        evaluations=peers,
        reference_name=selected_student["reference"],
        gates=selected_student["gates"],
        registry=registered_student,
    )
    return card + _every_form_section(evaluations, selected_student["reference"])


def with_audits(
    card: str,
    explanations: dict[str, Any],
    privacy: dict[str, Any],
    validation_summary: dict[str, Any],
) -> str:
    """The card followed by why the student decides as it does and what its
    training data may leak (:mod:`~distillery.ml.report.explanations`,
    :mod:`~distillery.ml.report.privacy`)."""
    return "\n".join(
        [
            card.rstrip("\n"),
            "",
            explanations_markdown(explanations),
            privacy_markdown(privacy, validation_summary["counts"]),
        ]
    )


def _teacher_lineage(
    teacher_train_summary: dict[str, Any], teacher_eval: ModelEvaluation
) -> dict[str, Any]:
    return {
        "run_id": teacher_train_summary.get("run_id"),
        "model_path": teacher_train_summary.get("config", {}).get("model_name_or_path"),
        "config": teacher_train_summary.get("config"),
        "val_macro_f1": teacher_train_summary.get("best_val_macro_f1"),
        "test_macro_f1": teacher_eval.macro_f1,
    }


def _every_form_section(evaluations: Sequence[ModelEvaluation], reference: str) -> str:
    secondary = [
        name for name in (f"{TEACHER}-onnx-int8", TEACHER) if name != reference
    ]
    return (
        "\n## Every form and peer\n\nTest split, 1 thread, batch-1 latency with "
        "tokenisation included; sizes include the tokenizer files. The student was "
        "chosen on the validation split. Ratios are against "
        f"`{reference}`:\n\n"
        + comparison_table_markdown(evaluations, reference, secondary)
        + "\n\nmacro-F1 against p50 latency, with the Pareto frontier:\n\n"
        "![trade-off](model_tradeoff.png)\n"
    )
