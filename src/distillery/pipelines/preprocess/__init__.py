"""Preprocess on Dask: normalise, de-duplicate, split by hash, tokenise."""

from distillery.pipelines.preprocess.pipeline import create_pipeline

__all__ = ["create_pipeline"]
