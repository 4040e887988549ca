"""Image tensors of the tiling families: splitting a batched processor output per example,
joining examples into a batch as the processor pads them, the dummy image's processor
settings and the processor settings that cap an image's tiles.

- tiled (Idefics3, SmolVLM): an image becomes rows x cols tiles plus the whole image (or only
  the whole image when small or when splitting is off), each tile <fake_token_around_image>
  <row_r_col_c> + image_seq_len <image> tokens. The processor returns pixel_values
  [batch, max tiles, 3, H, W] and pixel_attention_mask [batch, max tiles, H, W]: the tiles of a
  row's images in order, then all-zero tiles (mask 0) up to the batch's most tiles, which the
  model drops. We keep each example's real tiles and pad again per batch the same way.
- anyres (LLaVA-NeXT, LLaVA-OneVision): an image becomes the whole image plus the tiles of the
  grid in image_grid_pinpoints that fits it best; pixel_values [images, max tiles, 3, H, W]
  padded with all-zero tiles, image_sizes [images, 2] (height, width of the original) from
  which the model computes each image's tile count and token count (with image_newline), and
  for OneVision batch_num_images (images per example: an example with several images is not
  tiled). We keep each image's real tiles and pad per batch.
A real tile is never all zero (normalisation maps black to -mean/std), so trailing all-zero
tiles are exactly the processor's padding.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from generalist.batching.mllama_inputs import batch_images

if TYPE_CHECKING:
    import torch
    from PIL import Image
    from transformers import (
        BaseImageProcessor,
        PreTrainedModel,
        PreTrainedTokenizerBase,
        ProcessorMixin,
    )

TILED_TYPES = {"idefics3", "smolvlm"}
ANYRES_TYPES = {"llava_next", "llava_onevision"}
TILED_KEYS = {"pixel_values", "pixel_attention_mask"}
ANYRES_KEYS = ({"pixel_values", "image_sizes"}, {"pixel_values", "image_sizes", "batch_num_images"})
# the families whose training sequences differ (generalist.batching.token_layout's docstring);
# "text": a text-only LM. Named here, below token_layout, so the tile helpers can take it too.
LayoutKind = Literal[
    "default", "blip2", "paligemma", "mrope", "gemma3", "mllama", "tiled", "anyres", "text"
]
TILED_MARKERS = ("<fake_token_around_image>", "<global-img>")


def _tensor(value: object) -> torch.Tensor:
    import numpy as np
    import torch

    if isinstance(value, (list, tuple)):
        return torch.stack([_tensor(v) for v in value])
    return torch.as_tensor(np.asarray(value) if not isinstance(value, torch.Tensor) else value)


def _real_tiles(tiles: torch.Tensor) -> int:
    """How many leading tiles are not the processor's all-zero padding (at least one)."""
    nonzero = tiles.flatten(1).ne(0).any(dim=1).tolist()
    while len(nonzero) > 1 and not nonzero[-1]:
        nonzero.pop()
    return len(nonzero)


def split_tiled(enc: Mapping[str, Any], counts: list[int]) -> list[dict[str, Any]] | None:
    """Per-example tensors of a batched tiled / anyres output; None for another layout."""
    keys = {k for k in enc if k in TILED_KEYS | {"image_sizes", "batch_num_images"}}
    if keys == TILED_KEYS:
        pixels, mask = _tensor(enc["pixel_values"]), _tensor(enc["pixel_attention_mask"])
        if len(pixels) != len(counts):
            return None
        out = []
        for row, n in enumerate(counts):
            k = _real_tiles(mask[row]) if n else 0
            out.append({"pixel_values": pixels[row, :k], "pixel_attention_mask": mask[row, :k]})
        return out
    if keys not in ANYRES_KEYS:
        return None
    images = [_tensor(p) for p in enc["pixel_values"]]
    sizes = _tensor(enc["image_sizes"]).reshape(-1, 2)
    if len(images) != sum(counts) or len(sizes) != sum(counts):
        return None
    out, at = [], 0
    for n in counts:
        own = [im[: _real_tiles(im)] for im in images[at : at + n]]
        item = {"pixel_values": _pad_stack(own), "image_sizes": sizes[at : at + n]}
        if "batch_num_images" in keys:
            import torch

            item["batch_num_images"] = torch.tensor([n])
        out.append(item)
        at += n
    return out


def _pad_stack(parts: list[torch.Tensor], dims: int = 4) -> torch.Tensor:
    """Stack tensors zero-padded at the end of every dim to the largest (a new dim 0)."""
    import torch

    shape = [max(p.shape[d] for p in parts) for d in range(dims)]
    out = torch.zeros((len(parts), *shape), dtype=parts[0].dtype)
    for i, p in enumerate(parts):
        out[(i, *(slice(0, s) for s in p.shape))] = p
    return out


def join_tiled(kind: LayoutKind, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The batch's image tensors from per-row ones, padded as the family's processor pads."""
    import torch

    having = [r for r in rows if r]
    if not having:
        return {}
    if kind == "tiled":  # one slot per row (a row without images: all-zero tiles, mask 0)
        ref_p, ref_m = having[0]["pixel_values"], having[0]["pixel_attention_mask"]
        pixels = [r.get("pixel_values", ref_p[:0]) for r in rows]
        masks = [r.get("pixel_attention_mask", ref_m[:0]) for r in rows]
        return {"pixel_values": _pad_stack(pixels, 4), "pixel_attention_mask": _pad_stack(masks, 3)}
    tiles = [im for r in having for im in r["pixel_values"]]
    out = {
        "pixel_values": _pad_stack(tiles),
        "image_sizes": torch.cat([r["image_sizes"] for r in having]),
    }
    if "batch_num_images" in having[0]:
        counts = [r["batch_num_images"] if r else torch.tensor([0]) for r in rows]
        out["batch_num_images"] = torch.cat(counts)
    return out


def join_images(
    kind: LayoutKind,
    rows: list[dict[str, Any]],
    input_ids: torch.Tensor | None = None,
    image_token_id: int = 0,
) -> dict[str, Any]:
    """A batch's image tensors from its rows' (Encoded.images): tiles padded as the family's
    processor pads them (Mllama: [batch, images, tiles, ...] and the cross-attention mask per
    token of `input_ids`), any other key concatenated along dim 0 in row order."""
    import torch

    if kind == "mllama":
        out = batch_images(rows, input_ids, image_token_id)
        rows = [{k: v for k, v in r.items() if k not in out} for r in rows]
    else:
        out = join_tiled(kind, rows) if kind in ("tiled", "anyres") else {}
    for key in sorted({k for r in rows for k in r} - set(out)):
        out[key] = torch.cat([r[key] for r in rows if key in r], dim=0)
    return out


def dummy_kwargs(kind: LayoutKind) -> dict[str, Any]:
    """Processor settings of the blank dummy image: one tile (Idefics3: no splitting)."""
    return {"do_image_splitting": False} if kind == "tiled" else {}


def dummy_image(kind: LayoutKind) -> Image.Image:
    """The blank dummy image. anyres: 32 x 4 px, whose tiles the model unpads to a few rows, so
    the dummy costs the whole image's tokens and little more (LLaVA-NeXT 336 px: 870 tokens, not
    a square's 1176; OneVision 384 px: 813, not 1485); else 32 x 32 px."""
    from PIL import Image

    return Image.new("RGB", (32, 4) if kind == "anyres" else (32, 32))


def tiled_protected_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The ids of an image block's frame tokens (<fake_token_around_image>, <global-img>,
    <row_r_col_c>): left truncation may cut none of them, nor the <image> tokens."""
    names = [*TILED_MARKERS] + [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
    ids = {tokenizer.convert_tokens_to_ids(n) for n in names}
    return {int(i) for i in ids if i is not None and i != tokenizer.unk_token_id}


def tile_settings(
    model_type: str, max_tiles: int, image_processor: BaseImageProcessor
) -> dict[str, Any]:
    """Processor (image) settings that give an image at most `max_tiles` tiles besides the
    whole image; {} for a family that does not tile.

    Idefics3 / SmolVLM: a longest edge of at most k tiles (k*k <= max_tiles), or no splitting
    for max_tiles < 1. LLaVA-NeXT / OneVision: the grids in image_grid_pinpoints with at most
    max_tiles tiles (at least the single-tile grid); the model reads its grids from its config,
    so `cap_tiles` sets the same grids there.
    """
    if model_type in TILED_TYPES:
        if max_tiles < 1:
            return {"do_image_splitting": False}
        tile = int(image_processor.max_image_size["longest_edge"])
        per_side = max(1, int(max_tiles**0.5))
        edge = min(int(image_processor.size["longest_edge"]), per_side * tile)
        return {"size": {"longest_edge": edge}}
    if model_type in ANYRES_TYPES:
        crop = getattr(image_processor, "crop_size", None) or image_processor.size
        tile = int(crop.get("height") or crop.get("shortest_edge"))
        grids = [list(g) for g in image_processor.image_grid_pinpoints]
        kept = [g for g in grids if (g[0] // tile) * (g[1] // tile) <= max(max_tiles, 1)]
        return {"image_grid_pinpoints": kept or [[tile, tile]]}
    return {}


def cap_tiles(model: PreTrainedModel, processor: ProcessorMixin, max_tiles: int) -> dict[str, Any]:
    """Apply tile_settings to the processor's image processor (and the grids to the model's
    config, which LLaVA-NeXT / OneVision read); the settings applied."""
    config = getattr(model, "config", None)
    model_type = getattr(config, "model_type", "")
    settings = tile_settings(model_type, max_tiles, processor.image_processor)
    for key, value in settings.items():
        setattr(processor.image_processor, key, value)
    if "image_grid_pinpoints" in settings and config is not None:
        config.image_grid_pinpoints = settings["image_grid_pinpoints"]
    return settings
