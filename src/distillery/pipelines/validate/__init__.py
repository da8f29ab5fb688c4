"""Validate: data contracts stop the run; failing rows go to quarantine with a reason."""

from distillery.pipelines.validate.pipeline import create_pipeline

__all__ = ["create_pipeline"]
