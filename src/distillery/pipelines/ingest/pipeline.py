"""Ingest pipeline wiring: the ``ingest`` namespace."""

from kedro.pipeline import Pipeline, node

from distillery.pipelines.ingest.nodes import read_corpus, standardize_corpus


def create_pipeline(**kwargs) -> Pipeline:
    """Read the source into ``raw_corpus`` and map it to ``ingested_texts``.

    The namespace groups the nodes (one box in kedro-viz, one Airflow task); the
    datasets and parameters it lists keep their catalog names.
    """
    return Pipeline(
        [
            node(
                func=read_corpus,
                inputs="params:ingest",
                outputs=["raw_corpus", "source_manifest"],
                name="read_corpus_node",
            ),
            node(
                func=standardize_corpus,
                inputs=["raw_corpus", "source_manifest", "params:ingest"],
                outputs=["ingested_texts", "ingest_metrics"],
                name="standardize_corpus_node",
            ),
        ],
        namespace="ingest",
        outputs={"raw_corpus", "source_manifest", "ingested_texts", "ingest_metrics"},
        parameters={"ingest"},
        tags="ingest",
    )
