"""Compress: distil, prune and quantise the teacher into students; gate; register."""

from distillery.pipelines.compress.pipeline import create_pipeline

__all__ = ["create_pipeline"]
