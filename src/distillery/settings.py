"""Project settings: hooks and configuration loading."""

from pathlib import Path

from distillery.hooks import (
    AirflowRunTagsHook,
    DaskHook,
    RunLockHook,
    StageTimerHook,
    TrackingCheckHook,
)

HOOKS = (
    RunLockHook(),
    TrackingCheckHook(),
    DaskHook(),
    StageTimerHook(),
    AirflowRunTagsHook(),
)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # Environments override single keys (e.g. ingest.read_options), not whole sections.
    "merge_strategy": {"parameters": "soft", "mlflow": "soft"},
    # kedro-mlflow registers this pattern itself, but only in its own hook; the
    # tracking check runs before that hook and reads mlflow.yml too.
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]},
    "custom_resolvers": {
        # Absolute file URI under the project root (MLflow stores artifact roots as given).
        "project_uri": lambda relative: (Path.cwd() / relative).resolve().as_uri(),
    },
}
