"""Ingest: read the corpus, keep a raw copy, map it to the standard frame."""

from distillery.pipelines.ingest.pipeline import create_pipeline

__all__ = ["create_pipeline"]
