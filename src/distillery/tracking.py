"""Small helpers shaping node outputs for kedro-mlflow's metric datasets."""

from __future__ import annotations

from collections.abc import Mapping

MetricItem = dict[str, float | int]


def as_metrics(
    values: Mapping[str, float | int], step: int = 0
) -> dict[str, MetricItem]:
    """Turn ``{name: number}`` into ``MlflowMetricsHistoryDataset``'s ``{name: {value, step}}``."""
    return {
        name: {"value": float(value), "step": step} for name, value in values.items()
    }


def metric_key(*parts: object) -> str:
    """Build an MLflow-safe metric name (letters, digits, ``_ - . /`` only)."""
    raw = ".".join(str(p) for p in parts)
    return "".join(c if c.isalnum() or c in "_-./" else "_" for c in raw)


def active_run_id() -> str | None:
    """The MLflow run kedro-mlflow opened for this ``kedro run``, if any (for lineage)."""
    import mlflow  # noqa: PLC0415

    run = mlflow.active_run()
    return run.info.run_id if run is not None else None
