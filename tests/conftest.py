"""Shared test fixtures. Area-specific fixtures live in tests/<area>/conftest.py."""

from __future__ import annotations

import pytest

from generalist.catalog.loading import load_catalog


@pytest.fixture(scope="session", autouse=True)
def catalog() -> None:
    """Built-in tasks and mixtures are registered once for the whole run."""
    load_catalog()
