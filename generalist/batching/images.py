"""An Example's encoded images decoded for the processor (a bad one is a DataError)."""

from __future__ import annotations

import io
from typing import Any

from generalist.catalog.records import Example
from generalist.errors import DataError


def decode_images(example: Example) -> list[Any]:
    """The example's images as RGB PIL images; DataError naming the task, example and image."""
    from PIL import Image, UnidentifiedImageError

    out = []
    for n, data in enumerate(example.images):
        try:
            out.append(Image.open(io.BytesIO(data)).convert("RGB"))
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(
                f"task {example.task!r} example {example.id!r}: image {n} cannot be decoded "
                f"({err}); re-shard the dataset"
            ) from None
    return out
