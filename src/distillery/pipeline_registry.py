"""Project pipelines: one per stage; ``__default__`` runs them all in order."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from distillery.pipelines import (
    compress,
    evaluate,
    ingest,
    preprocess,
    train,
    validate,
)

STAGES = ("ingest", "validate", "preprocess", "train", "evaluate", "compress")


def register_pipelines() -> dict[str, Pipeline]:
    """Register each stage's pipeline and ``__default__`` = all stages.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    pipelines = {
        "ingest": ingest.create_pipeline(),
        "validate": validate.create_pipeline(),
        "preprocess": preprocess.create_pipeline(),
        "train": train.create_pipeline(),
        "evaluate": evaluate.create_pipeline(),
        "compress": compress.create_pipeline(),
    }
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
