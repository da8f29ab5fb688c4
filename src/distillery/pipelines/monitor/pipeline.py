"""Monitor pipeline wiring."""

from kedro.pipeline import Pipeline, node, pipeline

from distillery.pipelines.monitor.nodes import decide_retraining_action


def create_pipeline(**kwargs) -> Pipeline:
    """Decide the scheduled retraining's branch from the validated corpus."""
    return pipeline(
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
        tags="monitor",
    )
