"""Fixtures for the data tests: tiny images and throwaway dataset registrations."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator

import numpy as np
import pytest
from PIL import Image

from generalist.catalog.records import DATASETS, Dataset


def png(width: int = 8, height: int = 8, mode: str = "RGB", seed: int = 0) -> bytes:
    """A small random image encoded as PNG (distinct seeds give distinct bytes)."""
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode=mode)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


@pytest.fixture
def register() -> Iterator[Callable[..., Dataset]]:
    """register(name, iter_records, **kw): a Dataset that is unregistered after the test."""
    names: list[str] = []

    def _register(name: str, iter_records: Callable, **kwargs: object) -> Dataset:
        names.append(name)
        return DATASETS.register(Dataset(name=name, iter_records=iter_records, **kwargs))

    yield _register
    for name in names:
        DATASETS.unregister(name)


@pytest.fixture
def make_png() -> Callable[..., bytes]:
    """The `png` helper as a fixture (test modules cannot import conftest under importlib)."""
    return png
