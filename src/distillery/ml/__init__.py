"""Training library: models, data loading, the DDP loop, losses, metrics, checkpoints."""
