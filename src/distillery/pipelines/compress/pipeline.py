"""Compress pipeline wiring: the ``compress`` and ``release`` namespaces.

The stage runs in two namespaces because the evaluate stage sits between them:
``compress`` makes the teacher's ONNX peers and the students that evaluate measures,
and ``release`` gates, packages and registers a student from that evaluation. A
namespace that another stage interrupts would make the Airflow task groups a cycle.
"""

from kedro.pipeline import Pipeline, node

from distillery.pipelines.compress.nodes import (
    cache_teacher_logits,
    distill_students,
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
                ],
                outputs="distill_train",
                name="cache_teacher_logits_node",
            ),
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
        inputs={"teacher_model", "model_input_train", "model_input_val"},
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
        parameters={"compress_options"},
        tags="compress",
    )


def _release() -> Pipeline:
    """Gate on the evaluation, package the serving bundle, register, write the card."""
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
            node(
                func=write_model_card,
                inputs=[
                    "selected_student",
                    "model_evaluations",
                    "source_manifest",
                    "validation_summary",
                    "teacher_train_summary",
                    "registered_student",
                ],
                outputs="model_card",
                name="write_model_card_node",
            ),
        ],
        namespace="release",
        inputs={
            "model_evaluations",
            "export_report",
            "student_onnx",
            "distilled_students",
            "teacher_train_summary",
            "validation_summary",
            "source_manifest",
        },
        outputs={
            "selected_student",
            "student_onnx_bundle",
            "registered_student",
            "model_card",
        },
        parameters={"compress_options", "compress_options.registry", "preprocess"},
        tags="compress",
    )
