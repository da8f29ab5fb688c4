"""Evaluate pipeline wiring: the ``evaluate`` namespace."""

from kedro.pipeline import Pipeline, node

from distillery.pipelines.evaluate.nodes import (
    evaluate_models,
    fit_baseline_model,
    report_models,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Baseline, then every model form measured side by side, then the reports.

    The namespace groups the nodes (one box in kedro-viz, one Airflow task); the
    datasets and parameters it lists keep their catalog names.
    """
    return Pipeline(
        [
            node(
                func=fit_baseline_model,
                inputs=[
                    "model_input_train@pandas",
                    "model_input_val@pandas",
                    "label_vocab",
                    "params:evaluate_options",
                ],
                outputs=["baseline_model", "baseline_search"],
                name="fit_baseline_model_node",
            ),
            node(
                func=evaluate_models,
                inputs=[
                    "baseline_model",
                    "teacher_model",
                    "teacher_onnx",
                    "distilled_students",
                    "student_onnx",
                    "model_input_test@pandas",
                    "label_vocab",
                    "params:evaluate_options",
                ],
                outputs="model_evaluations",
                name="evaluate_models_node",
            ),
            node(
                func=report_models,
                inputs=["model_evaluations", "label_vocab"],
                outputs=[
                    "model_comparison",
                    "model_comparison_md",
                    "confusion_matrices",
                    "model_tradeoff",
                    "evaluate_metrics",
                ],
                name="report_models_node",
            ),
        ],
        namespace="evaluate",
        inputs={
            "model_input_train",
            "model_input_val",
            "model_input_test",
            "label_vocab",
            "teacher_model",
            "teacher_onnx",
            "distilled_students",
            "student_onnx",
        },
        outputs={
            "baseline_model",
            "baseline_search",
            "model_evaluations",
            "model_comparison",
            "model_comparison_md",
            "confusion_matrices",
            "model_tradeoff",
            "evaluate_metrics",
        },
        parameters={"evaluate_options"},
        tags="evaluate",
    )
