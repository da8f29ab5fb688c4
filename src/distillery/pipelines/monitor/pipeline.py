"""Monitor pipeline wiring: the ``monitor`` namespace."""

from kedro.pipeline import Pipeline, node

from distillery.pipelines.monitor.nodes import decide_retraining_action


def create_pipeline(**kwargs) -> Pipeline:
    """Decide the scheduled retraining's branch from the validated corpus.

    The namespace groups the node (one box in kedro-viz, the Airflow ``monitor``
    branch task); the datasets and parameters it lists keep their catalog names.
    """
    return Pipeline(
        [
            node(
                func=decide_retraining_action,
                inputs=[
                    "validation_summary",
                    "params:monitor_options",
                    "params:compress_options.registry",
                ],
                outputs=["retrain_decision", "monitor_metrics"],
                name="decide_retraining_node",
            ),
        ],
        namespace="monitor",
        inputs={"validation_summary"},
        outputs={"retrain_decision", "monitor_metrics"},
        parameters={"monitor_options", "compress_options.registry"},
        tags="monitor",
    )
