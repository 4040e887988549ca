"""The training tests' tiny synthetic shards (`shard_root`, a session fixture) and tiny-model
config: tiny_config_dict(shards, out, **dotted_overrides), config_factory(shards, directory)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from generalist.catalog.loading import import_user_module

from support import TINY_TASKS


@pytest.fixture(scope="session")
def shard_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """train_colors (images), train_words and train_lists (text only) written with the real
    shard writer."""
    from generalist.shards.writer import write_dataset

    import_user_module(str(TINY_TASKS))
    root = tmp_path_factory.mktemp("shards")
    for dataset in ("train_colors", "train_words", "train_lists"):
        write_dataset(dataset, root, root, shard_size=10, image_size=32, progress=False)
    return root


def tiny_config_dict(shards: Path, out: Path, **overrides: object) -> dict:
    """A config dict for a tiny LLaVA on the tiny tasks (tests override what they need)."""
    cfg: dict = {
        "imports": [str(TINY_TASKS)],
        "tasks": {"train_colors": 1.0, "train_words": 1.0},
        "shards": str(shards),
        "model": {
            "tiny": {
                "vision_layers": 1,
                "text_layers": 2,
                "hidden_size": 32,
                "heads": 2,
                "image_size": 32,
                "patch_size": 16,
                "vocab_size": 200,
            }
        },
        "lora": {"enabled": False},
        "deepspeed": 2,
        "optim": {"lr": 3e-3, "warmup_steps": 2, "decay": "constant"},
        "batch": {"micro_batch_size": 4, "grad_accum": 1, "max_length": 96, "group_by_length": 2},
        "steps": 12,
        "seed": 0,
        "output_dir": str(out),
        "checkpoint": {"every": 4, "keep": 2},
        "logging": {"every": 1, "mlflow": False},
    }
    for key, value in overrides.items():
        node = cfg
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return cfg


def config_factory(shard_root: Path, directory: Path):
    def make(name: str = "config.yaml", **overrides: object) -> Path:
        """Path of a YAML config for a tiny run; its output_dir is the path without .yaml."""
        path = directory / name
        out = path.with_suffix("")
        path.write_text(yaml.safe_dump(tiny_config_dict(shard_root, out, **overrides)))
        return path

    return make
