"""Shared test fixtures. Area-specific fixtures live in tests/<area>/conftest.py."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest

from generalist.catalog.loading import load_catalog


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist (the test command's 2 workers on 2 cores), one torch thread a worker and for
    what it starts: two workers of two OpenMP threads each, beside a launch's ranks, oversubscribe
    the cores, and OpenMP's spin-waiting then made 2-second model tests take 30."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


# the longest files (measured: each 3 to 5 minutes on a loaded worker), started first
LONGEST_FILES = (
    "reliability/test_long_runs.py",
    "train/test_runs.py",
    "model/test_zero3_families.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first, then files by their number of slow tests (DeepSpeed launches),
    each file's tests together and in order: on the test command's 2 xdist workers (--dist
    loadfile) the long files start first and the short ones fill the end, instead of a long file
    running last alone."""
    slow = Counter(item.path for item in items if item.get_closest_marker("slow"))
    here = Path(__file__).parent

    def weight(item: pytest.Item) -> tuple[int, int]:
        name = item.path.relative_to(here).as_posix() if item.path.is_relative_to(here) else ""
        rank = LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)
        return rank, -slow[item.path]

    items.sort(key=weight)  # a stable sort: a file's tests keep their order


@pytest.fixture(scope="session", autouse=True)
def catalog() -> None:
    """Built-in tasks and mixtures are registered once for the whole run."""
    load_catalog()


@pytest.fixture(scope="session", autouse=True)
def faster_launches() -> None:
    """Every subprocess the tests start finds tests/support/launcher_site first on its path: its
    sitecustomize spares each process that imports deepspeed the mlflow import of deepspeed's
    autotuner (a launch: ~4.5 s of the runner and launch.py, ~2 s of each rank)."""
    site = str(Path(__file__).parent / "support" / "launcher_site")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))
