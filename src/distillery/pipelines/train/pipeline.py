"""Train pipeline wiring."""

from kedro.pipeline import Pipeline, node, pipeline

from distillery.pipelines.train.nodes import train_teacher


def create_pipeline(**kwargs) -> Pipeline:
    """Fine-tune the teacher on the tokenised splits."""
    return pipeline(
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
        tags="train",
    )
