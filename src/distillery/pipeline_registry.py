"""Project pipelines: one per stage; ``__default__`` runs them all in order.

``retrain`` adds the scheduled-retraining nodes around the stages: ``monitor`` decides
(after validate) whether to skip, re-distil or retrain, and ``promote`` (after
compress) moves the ``champion`` alias if the new student is better. It is the
pipeline the Airflow DAG is generated from (``make airflow-dag``).

Each stage's nodes live in a Kedro namespace of the stage's name (``compress`` has two:
``compress`` and ``release``, around evaluate), which kedro-viz draws as one box and
kedro-airflow (``--group-by namespace``) turns into one task. Node names carry the
namespace (``train.train_teacher_node``); dataset and parameter names do not.
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
# The namespaces of the ``retrain`` pipeline in run order: one Airflow task each.
NAMESPACES = (
    "ingest",
    "validate",
    "monitor",
    "preprocess",
    "train",
    "compress",
    "evaluate",
    "release",
    "promote",
)


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
