"""Validate pipeline wiring."""

from kedro.pipeline import Pipeline, node, pipeline

from distillery.pipelines.validate.nodes import validate_corpus


def create_pipeline(**kwargs) -> Pipeline:
    """Validate ``ingested_texts`` into clean and quarantined rows plus a report."""
    return pipeline(
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
        tags="validate",
    )
