"""Train pipeline wiring: the ``train`` namespace."""

from kedro.pipeline import Pipeline, node

from distillery.pipelines.train.nodes import train_teacher


def create_pipeline(**kwargs) -> Pipeline:
    """Fine-tune the teacher on the tokenised splits.

    The namespace groups the node (one box in kedro-viz, one Airflow task); the
    datasets and parameters it lists keep their catalog names.
    """
    return Pipeline(
        [
            node(
                func=train_teacher,
                inputs=[
                    "model_input_train@pandas",
                    "model_input_val@pandas",
                    "label_vocab",
                    "params:train_options",
                    "validation_summary",
                ],
                outputs=[
                    "teacher_model",
                    "teacher_train_metrics",
                    "teacher_train_summary",
                    "teacher_learning_curve",
                ],
                name="train_teacher_node",
            ),
        ],
        namespace="train",
        inputs={
            "model_input_train",
            "model_input_val",
            "label_vocab",
            "validation_summary",
        },
        outputs={
            "teacher_model",
            "teacher_train_metrics",
            "teacher_train_summary",
            "teacher_learning_curve",
        },
        parameters={"train_options"},
        tags="train",
    )
