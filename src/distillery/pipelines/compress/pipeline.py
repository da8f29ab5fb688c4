"""Compress pipeline wiring."""

from kedro.pipeline import Pipeline, node, pipeline

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
    """Teacher ONNX peers -> teacher logits -> students -> ONNX -> gate -> bundle -> registry -> model card."""
    return pipeline(
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
        tags="compress",
    )
