"""Promote pipeline wiring."""

from kedro.pipeline import Pipeline, node, pipeline

from distillery.pipelines.promote.nodes import promote_challenger


def create_pipeline(**kwargs) -> Pipeline:
    """Champion vs challenger; the ``champion`` alias moves only for a better model."""
    return pipeline(
        [
            node(
                func=promote_challenger,
                inputs=[
                    "registered_student",
                    "model_input_test@pandas",
                    "label_vocab",
                    "params:compress_options.registry",
                    "params:promote_options",
                ],
                outputs=["promotion", "promote_metrics"],
                name="promote_challenger_node",
            ),
        ],
        tags="promote",
    )
