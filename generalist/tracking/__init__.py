"""Experiment tracking: a run directory's local records, and MLflow fed from them (queued,
retried, sent once)."""
