"""Fixtures for the training tests: tiny synthetic shards and a tiny-model config file
(tests/support/train_config.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.train_config import config_factory, shard_root

__all__ = ["shard_root", "tiny_config", "tiny_config_module"]


@pytest.fixture
def tiny_config(shard_root: Path, tmp_path: Path):
    """tiny_config(name, **dotted_overrides) -> a YAML config path in tmp_path."""
    return config_factory(shard_root, tmp_path)


@pytest.fixture(scope="module")
def tiny_config_module(shard_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The same factory for module-scoped runs shared by several tests."""
    return config_factory(shard_root, tmp_path_factory.mktemp("runs"))
