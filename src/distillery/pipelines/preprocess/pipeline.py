"""Preprocess pipeline wiring: the ``preprocess`` namespace.

Nodes tagged ``dask`` start the Dask client (see hooks).
"""

from kedro.pipeline import Pipeline, node

from distillery.pipelines.preprocess.nodes import (
    build_label_vocab,
    normalize_texts,
    summarize_preprocess,
    tokenize_splits,
)


def create_pipeline(**kwargs) -> Pipeline:
    """Normalise, de-duplicate, split and tokenise ``validated_texts``.

    The namespace groups the nodes (one box in kedro-viz, one Airflow task); the
    datasets and parameters it lists keep their catalog names.
    """
    return Pipeline(
        [
            node(
                func=normalize_texts,
                inputs=["validated_texts@dask", "params:preprocess"],
                outputs="normalized_texts",
                name="normalize_texts_node",
            ),
            node(
                func=build_label_vocab,
                inputs="normalized_texts",
                outputs="label_vocab",
                name="build_label_vocab_node",
            ),
            node(
                func=tokenize_splits,
                inputs=["normalized_texts", "label_vocab", "params:preprocess"],
                outputs=[
                    "model_input_train@dask",
                    "model_input_val@dask",
                    "model_input_test@dask",
                ],
                name="tokenize_splits_node",
            ),
            node(
                func=summarize_preprocess,
                inputs="normalized_texts",
                outputs=["duplicate_texts", "preprocess_summary", "preprocess_metrics"],
                name="summarize_preprocess_node",
            ),
        ],
        namespace="preprocess",
        inputs={"validated_texts"},
        outputs={
            "normalized_texts",
            "label_vocab",
            "model_input_train",
            "model_input_val",
            "model_input_test",
            "duplicate_texts",
            "preprocess_summary",
            "preprocess_metrics",
        },
        parameters={"preprocess"},
        tags=["preprocess", "dask"],
    )
