"""Promote: champion vs challenger on the same test split; move ``champion`` if better."""

from distillery.pipelines.promote.pipeline import create_pipeline

__all__ = ["create_pipeline"]
