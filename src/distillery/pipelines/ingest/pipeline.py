"""Ingest pipeline wiring."""

from kedro.pipeline import Pipeline, node, pipeline

from distillery.pipelines.ingest.nodes import read_corpus, standardize_corpus


def create_pipeline(**kwargs) -> Pipeline:
    """Read the source into ``raw_corpus`` and map it to ``ingested_texts``."""
    return pipeline(
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
        tags="ingest",
    )
