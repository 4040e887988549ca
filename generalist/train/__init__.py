"""Training: the typed run config and its preflight checks, DeepSpeed setup, the loop and its
step, checkpoints with exact resume, periodic evaluation, and vision-tower pretraining."""
