"""Compress pipeline wiring: the ``compress`` and ``release`` namespaces.

The stage runs in two namespaces because the evaluate stage sits between them:
``compress`` makes the teacher's ONNX peers and the students that evaluate measures,
and ``release`` gates, packages and registers a student from that evaluation. A
namespace that another stage interrupts would make the Airflow task groups a cycle.
"""

from kedro.pipeline import Node, Pipeline, node

from distillery.pipelines.compress.nodes import (
    audit_privacy,
    cache_teacher_logits,
    distill_students,
    explain_student,
    export_students,
    export_teacher,
    package_student,
    register_student,
    select_student,
    tokenize_student_val,
    write_model_card,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Teacher ONNX peers -> teacher logits -> students -> ONNX -> gate -> bundle -> registry -> model card.

    Each namespace groups its nodes (one box in kedro-viz, one Airflow task); the
    datasets and parameters it lists keep their catalog names. Both carry the
    ``compress`` tag, so the stage's wall time is still one number.
    """
    return Pipeline([_compress(), _release()])


def _compress() -> Pipeline:
    """Teacher ONNX peers, cached teacher logits, distilled and exported students."""
    return Pipeline(
        [
            *_distillation_set_nodes(),
            node(
                func=tokenize_student_val,
                inputs=[
                    "teacher_model",
                    "model_input_val@pandas",
                    "params:compress_options",
                ],
                outputs="student_input_val",
                name="tokenize_student_val_node",
            ),
            node(
                func=distill_students,
                inputs=[
                    "teacher_model",
                    "distill_train",
                    "student_input_val",
                    "params:compress_options",
                ],
                outputs=["distilled_students", "distill_metrics", "distill_summary"],
                name="distill_students_node",
            ),
            node(
                func=export_students,
                inputs=[
                    "distilled_students",
                    "student_input_val",
                    "params:compress_options",
                ],
                outputs=["student_onnx", "export_report"],
                name="export_students_node",
            ),
        ],
        namespace="compress",
        inputs={
            "teacher_model",
            "model_input_train",
            "model_input_val",
            "model_input_test",
        },
        outputs={
            "teacher_onnx",
            "teacher_export_report",
            "distill_train",
            "distilled_students",
            "distill_metrics",
            "distill_summary",
            "student_input_val",
            "student_onnx",
            "export_report",
        },
        # preprocess and validate: a transfer set is cleaned as the corpus was.
        parameters={"compress_options", "preprocess", "validate"},
        tags="compress",
    )


def _distillation_set_nodes() -> list[Node]:
    """The teacher's ONNX peers and its cached targets (with any transfer texts)."""
    return [
        node(
            func=export_teacher,
            inputs=[
                "teacher_model",
                "model_input_val@pandas",
                "params:compress_options",
            ],
            outputs=["teacher_onnx", "teacher_export_report"],
            name="export_teacher_node",
        ),
        node(
            func=cache_teacher_logits,
            inputs=[
                "teacher_model",
                "teacher_onnx",
                "teacher_export_report",
                "model_input_train@pandas",
                "params:compress_options",
                # a transfer set is kept apart from these and cleaned as the corpus
                "model_input_val@pandas",
                "model_input_test@pandas",
                "params:preprocess",
                "params:validate",
            ],
            outputs="distill_train",
            name="cache_teacher_logits_node",
        ),
    ]


# The release namespace's datasets and parameters keep their catalog names.
_RELEASE_INPUTS = {
    "model_evaluations",
    "export_report",
    "student_onnx",
    "distilled_students",
    "teacher_train_summary",
    "validation_summary",
    "source_manifest",
    "teacher_onnx",
    "teacher_model",
    "model_input_train",
    "model_input_test",
}
_RELEASE_OUTPUTS = {
    "selected_student",
    "student_onnx_bundle",
    "registered_student",
    "student_explanations",
    "explanations_page",
    "explain_metrics",
    "privacy_audit",
    "privacy_metrics",
    "model_card",
}
_RELEASE_PARAMETERS = {
    "compress_options",
    "compress_options.registry",
    "preprocess",
    "explain_options",
    "privacy_options",
}


def _release() -> Pipeline:
    """Gate on the evaluation, package the serving bundle, register, explain and audit
    the student, write the card."""
    return Pipeline(
        [
            node(
                func=select_student,
                inputs=[
                    "model_evaluations",
                    "export_report",
                    "teacher_train_summary",
                    "params:compress_options",
                ],
                outputs="selected_student",
                name="select_student_node",
            ),
            node(
                func=package_student,
                inputs=[
                    "selected_student",
                    "student_onnx",
                    "distilled_students",
                    "params:preprocess",
                ],
                outputs="student_onnx_bundle",
                name="package_student_node",
            ),
            node(
                func=register_student,
                inputs=[
                    "student_onnx_bundle",
                    "selected_student",
                    "validation_summary",
                    "teacher_train_summary",
                    "params:compress_options.registry",
                ],
                outputs="registered_student",
                name="register_student_node",
            ),
            *_audit_nodes(),
            node(
                func=write_model_card,
                inputs=[
                    "selected_student",
                    "model_evaluations",
                    "source_manifest",
                    "validation_summary",
                    "teacher_train_summary",
                    "registered_student",
                    "student_explanations",
                    "privacy_audit",
                ],
                outputs="model_card",
                name="write_model_card_node",
            ),
        ],
        namespace="release",
        inputs=_RELEASE_INPUTS,
        outputs=_RELEASE_OUTPUTS,
        parameters=_RELEASE_PARAMETERS,
        tags="compress",
    )


def _audit_nodes() -> list[Node]:
    """Explain the released student and audit what its training data may leak."""
    return [
        node(
            func=explain_student,
            inputs=[
                "student_onnx_bundle",
                "teacher_onnx",
                "teacher_model",
                "model_input_test@pandas",
                "params:explain_options",
            ],
            outputs=[
                "student_explanations",
                "explanations_page",
                "explain_metrics",
            ],
            name="explain_student_node",
        ),
        node(
            func=audit_privacy,
            inputs=[
                "student_onnx_bundle",
                "teacher_onnx",
                "teacher_model",
                "model_input_train@pandas",
                "model_input_test@pandas",
                "params:privacy_options",
            ],
            outputs=["privacy_audit", "privacy_metrics"],
            name="audit_privacy_node",
        ),
    ]
