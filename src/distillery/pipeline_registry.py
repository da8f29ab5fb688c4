"""Project pipelines: one per stage; ``__default__`` runs them all in order.

``retrain`` adds the scheduled-retraining nodes around the stages: ``monitor`` decides
(after validate) whether to skip, re-distil or retrain, and ``promote`` (after
compress) moves the ``champion`` alias if the new student is better. It is the
pipeline the Airflow DAG is generated from (``make airflow-dag``).
"""

from __future__ import annotations

from kedro.pipeline import Pipeline

from distillery.pipelines import (
    compress,
    evaluate,
    ingest,
    monitor,
    preprocess,
    promote,
    train,
    validate,
)

STAGES = ("ingest", "validate", "preprocess", "train", "evaluate", "compress")


def register_pipelines() -> dict[str, Pipeline]:
    """Register each stage's pipeline, ``__default__`` = all stages, and ``retrain``.

    Returns:
        A mapping from pipeline names to ``Pipeline`` objects.
    """
    stages = {
        "ingest": ingest.create_pipeline(),
        "validate": validate.create_pipeline(),
        "preprocess": preprocess.create_pipeline(),
        "train": train.create_pipeline(),
        "evaluate": evaluate.create_pipeline(),
        "compress": compress.create_pipeline(),
    }
    scheduling = {
        "monitor": monitor.create_pipeline(),
        "promote": promote.create_pipeline(),
    }
    default = sum(stages.values(), Pipeline([]))
    return {
        **stages,
        **scheduling,
        "__default__": default,
        "retrain": default + scheduling["monitor"] + scheduling["promote"],
    }
