"""Image size caps a run sets (model.max_pixels, model.max_tiles), applied before the processor.

A high-resolution source image (a 3000x3000 radiograph) must never reach a processor at full
size: Qwen2-VL-style processors turn pixels into patches (tokens), tiling processors into tiles,
and either can make a batch run out of memory. So every image is decoded here and, above
`max_pixels`, downscaled with its aspect ratio kept before any processor sees it.

`max_tiles` is generic: at most this many tiles per image, for the families that tile. Mllama
maps it to its processor's keyword (TILE_KWARGS) and widens the tensors back to the model's own
tile count (generalist.batching.mllama_inputs); Idefics3 / SmolVLM and LLaVA-NeXT / OneVision
get image-processor settings (and, for the anyres grids, the model config's grids, which the
model reads) from generalist.batching.tiled_images.cap_tiles.
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any

from generalist.batching.tiled_images import ANYRES_TYPES, TILED_TYPES, cap_tiles
from generalist.catalog.records import Example
from generalist.errors import ConfigError, DataError
from generalist.model.bundle import ModelBundle

if TYPE_CHECKING:
    from PIL import Image

# model_type -> the processor keyword that caps tiles per image (a tiling family adds its own)
TILE_KWARGS = {"mllama": "max_image_tiles"}


def cap_pixels(image: Image.Image, max_pixels: int | None) -> Image.Image:
    """`image` (PIL) downscaled, aspect kept, to at most `max_pixels` pixels; else itself."""
    width, height = image.size
    if max_pixels is None or width * height <= max_pixels:
        return image
    from PIL import Image

    scale = math.sqrt(max_pixels / (width * height))
    size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC)


class BadImage(DataError):
    """An example's image that does not decode, or is above model.max_image_pixels: the line
    names the shard and sample key it came from. With skip_bad the collator drops the example
    (Collator.encode_many's `on_bad`) instead of stopping the run."""


def decode_images(
    example: Example, max_pixels: int | None = None, max_image_pixels: int | None = None
) -> list[Any]:
    """The example's images as RGB PIL images, each capped at `max_pixels`. An image whose
    header gives more than `max_image_pixels` (model.max_image_pixels) is refused before its
    pixels are decoded: a decompression bomb (a 20000 x 20000 PNG of a few kB) would take GBs.
    Either failure is a BadImage naming the image's shard and sample key (Example.image_sources;
    an exemplar's image names the exemplar's), task and example."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    out = []
    pil_limit = Image.MAX_IMAGE_PIXELS
    for n, data in enumerate(example.images):
        where = f"task {example.task!r} example {example.id!r}: image {n}"
        source = example.image_sources[n] if n < len(example.image_sources) else example.source
        where = f"{source}: {where}" if source else where
        try:
            with warnings.catch_warnings():
                # our own limit below replaces PIL's global one (a warning, then an error at 2x)
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                if max_image_pixels is not None:
                    Image.MAX_IMAGE_PIXELS = None
                try:
                    image = Image.open(io.BytesIO(data))
                finally:
                    Image.MAX_IMAGE_PIXELS = pil_limit
                width, height = image.size
                if max_image_pixels is not None and width * height > max_image_pixels:
                    raise BadImage(
                        f"{where} is {width} x {height} = {width * height:,} pixels, above "
                        f"model.max_image_pixels={max_image_pixels:,} (a decompression bomb, or a "
                        f"scan to downscale when sharding); raise the setting to accept it, or "
                        f"set skip_bad: true to drop such examples"
                    )
                image = image.convert("RGB")
        except (
            UnidentifiedImageError,
            OSError,
            ValueError,
            SyntaxError,
            Image.DecompressionBombError,
        ) as err:
            # damaged pixel data (the shard reader checks only signatures and end markers)
            raise BadImage(
                f"{where} cannot be decoded ({err}); re-shard the dataset, or set skip_bad: true "
                f"to drop such examples"
            ) from None
        out.append(cap_pixels(image, max_pixels))
    return out


def tile_kwargs(model_type: str, max_tiles: int | None, model_tiles: int | None) -> dict:
    """The processor keywords that cap tiles per image at `max_tiles` for this family.

    model_tiles: the most tiles the model itself reads (None: no fixed limit).
    """
    if max_tiles is None:
        return {}
    if model_type not in TILE_KWARGS:
        raise ConfigError(
            f"model.max_tiles: the {model_type!r} model does not tile its images; "
            "drop model.max_tiles (model.max_pixels caps any family's image size)"
        )
    if model_tiles is not None and max_tiles > model_tiles:
        raise ConfigError(
            f"model.max_tiles: {max_tiles} is more than the {model_tiles} tiles the model reads; "
            f"set at most {model_tiles}"
        )
    return {TILE_KWARGS[model_type]: max_tiles}


def processor_kwargs(bundle: ModelBundle, kind: str) -> tuple[dict, int | None]:
    """(processor keywords for model.max_tiles, the model's fixed tile count when the tensors
    must be widened back to it: Mllama under a cap; else None)."""
    config = getattr(bundle.base_model, "config", None)
    model_type = str(getattr(config, "model_type", ""))
    max_tiles = getattr(bundle.config, "max_tiles", None)
    if model_type in TILED_TYPES | ANYRES_TYPES:
        if max_tiles is not None:  # settings on the processor (and grids in the model config)
            cap_tiles(bundle.base_model, bundle.processor, max_tiles)
        return {}, None
    fixed = getattr(getattr(config, "vision_config", None), "max_num_tiles", None)
    fixed = int(fixed) if kind == "mllama" and fixed else None
    kwargs = tile_kwargs(model_type, max_tiles, fixed)
    return kwargs, (fixed if kwargs else None)
