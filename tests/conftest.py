"""Shared test fixtures. Area-specific fixtures live in tests/<area>/conftest.py."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from generalist.catalog import loading
from generalist.catalog.loading import load_catalog
from generalist.catalog.mixture import MIXTURES
from generalist.catalog.records import DATASETS
from generalist.catalog.task import TASKS


@pytest.fixture(scope="session", autouse=True)
def catalog() -> None:
    """Built-in tasks and mixtures are registered once for the whole run."""
    load_catalog()


@pytest.fixture(scope="module", autouse=True)
def module_catalog() -> Iterator[None]:
    """What a test module registers (its own tasks, datasets, mixtures, imported files) is gone
    after it, so two modules may declare the same names in their own folders."""
    loaded = dict(loading._loaded_paths)
    with ExitStack() as scopes:
        for registry in (TASKS, DATASETS, MIXTURES):
            scopes.enter_context(registry.scoped())
        yield
    loading._loaded_paths.clear()
    loading._loaded_paths.update(loaded)
