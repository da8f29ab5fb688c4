"""Train: fine-tune the pretrained teacher with DDP ranks launched from the node."""

from distillery.pipelines.train.pipeline import create_pipeline

__all__ = ["create_pipeline"]
