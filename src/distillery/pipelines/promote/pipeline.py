"""Promote pipeline wiring: the ``promote`` namespace."""

from kedro.pipeline import Pipeline, node

from distillery.pipelines.promote.nodes import promote_challenger


def create_pipeline(**kwargs) -> Pipeline:
    """Champion vs challenger; the ``champion`` alias moves only beyond the noise.

    The namespace groups the node (one box in kedro-viz, one Airflow task); the
    datasets and parameters it lists keep their catalog names.
    """
    return Pipeline(
        [
            node(
                func=promote_challenger,
                inputs=[
                    "registered_student",
                    "model_input_val@pandas",
                    "model_input_test@pandas",
                    "label_vocab",
                    "params:compress_options.registry",
                    "params:promote_options",
                ],
                outputs=["promotion", "promote_metrics"],
                name="promote_challenger_node",
            ),
        ],
        namespace="promote",
        inputs={
            "registered_student",
            "model_input_val",
            "model_input_test",
            "label_vocab",
        },
        outputs={"promotion", "promote_metrics"},
        parameters={"compress_options.registry", "promote_options"},
        tags="promote",
    )
