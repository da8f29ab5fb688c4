"""Training: the distributed loop, its launcher, checkpoints, losses and options."""
