"""Evaluate: one code path measures every model (quality, size, CPU latency)."""

from distillery.pipelines.evaluate.pipeline import create_pipeline

__all__ = ["create_pipeline"]
