"""Monitor: compare the new corpus with the latest model's data and decide how to retrain."""

from distillery.pipelines.monitor.pipeline import create_pipeline

__all__ = ["create_pipeline"]
