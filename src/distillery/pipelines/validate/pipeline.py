"""Validate pipeline wiring: the ``validate`` namespace."""

from kedro.pipeline import Pipeline, node

from distillery.pipelines.validate.nodes import validate_corpus


def create_pipeline(**kwargs) -> Pipeline:
    """Validate ``ingested_texts`` into clean and quarantined rows plus a report.

    The namespace groups the node (one box in kedro-viz, one Airflow task); the
    datasets and parameters it lists keep their catalog names.
    """
    return Pipeline(
        [
            node(
                func=validate_corpus,
                inputs=[
                    "ingested_texts",
                    "source_manifest",
                    "params:validate",
                    "params:ingest",
                ],
                outputs=[
                    "validated_texts@pandas",
                    "quarantined_texts",
                    "repaired_texts",
                    "validation_report",
                    "validation_summary",
                    "validate_metrics",
                ],
                name="validate_corpus_node",
            ),
        ],
        namespace="validate",
        inputs={"ingested_texts", "source_manifest"},
        outputs={
            "validated_texts",
            "quarantined_texts",
            "repaired_texts",
            "validation_report",
            "validation_summary",
            "validate_metrics",
        },
        parameters={"validate", "ingest"},
        tags="validate",
    )
