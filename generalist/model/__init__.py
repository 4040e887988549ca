"""Models: typed configs, building (hub id, local dir, tiny from config, composed), LoRA,
the on-disk model dir, and export to a plain Hugging Face model."""
