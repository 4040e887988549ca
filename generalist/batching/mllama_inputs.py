"""Mllama (Llama 3.2 Vision) image tensors and cross-attention mask, per example and per batch.

Mllama does not expand its <|image|> token: text tokens attend each image's tiles through
cross-attention layers, gated by `cross_attention_mask` [batch, tokens, images, tiles]. The
processor builds that mask from the token ids (a token attends the latest <|image|> before it,
consecutive <|image|> tokens together, up to the next one; tokens before the first image attend
none, and the model zeroes their cross-attention output). We keep the processor's per-example
image tensors and build the mask at padding time from the padded rows, with the processor's own
functions, so it equals the processor's mask for the same padded ids (right or left padding).

Per example: pixel_values [images, tiles, C, H, W], aspect_ratio_ids [images], aspect_ratio_mask
[images, tiles]. Per batch: padded to the most images of a row, as the processor pads (zero
pixels, aspect ratio id 0, tile mask [1, 0, ...]). A text-only row's dummy image is that
padding image (as_padding) without a token, so no token attends it, the row reads as it does
beside image rows, and the vision tower runs on every rank. (Mllama's cross-attention layers
still add their output to tokens that attend no image, unlike a batch without any image, where
they are skipped: plain transformers on a text-only prompt without pixel_values differs.)

max_tiles below the model's max_num_tiles: the processor tiles with `max_image_tiles=cap`, then
the tiles are padded back to the model's count and the aspect ratio ids mapped to the model's
list (the embeddings are indexed by the ids of the model's own max_num_tiles).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

IMAGE_KEYS = ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask")


def is_mllama_output(keys: set[str]) -> bool:
    """A processor output with Mllama's tiled image tensors."""
    return "aspect_ratio_ids" in keys


def split(enc: Mapping[str, Any], counts: list[int]) -> list[dict[str, Any]]:
    """Per-example image tensors of a batched processor call with `counts` images each."""
    import torch

    parts = {k: torch.as_tensor(enc[k]) for k in IMAGE_KEYS}
    return [{k: v[i, :n] for k, v in parts.items()} for i, n in enumerate(counts)]


def as_padding(item: dict[str, Any]) -> dict[str, Any]:
    """The processor's padding image in the shape of `item` (one image): zero pixels, aspect
    ratio id 0, one tile in the mask. Mllama's cross-attention layers add their output even
    to tokens that attend no image, so a text-only row's dummy is exactly what the processor
    gives a text-only row beside image rows: that row reads the same in any batch."""
    pixels, ids, mask = (item[k] for k in IMAGE_KEYS)
    mask = mask.new_zeros(mask.shape)
    mask[:, 0] = 1
    return {
        "pixel_values": pixels.new_zeros(pixels.shape),
        "aspect_ratio_ids": ids.new_zeros(ids.shape),
        "aspect_ratio_mask": mask,
    }


def widen_tiles(item: dict[str, Any], cap: int, model_tiles: int) -> dict[str, Any]:
    """Tensors tiled with max_image_tiles=cap as the model with `model_tiles` tiles reads them."""
    import torch
    from transformers.models.mllama.image_processing_pil_mllama import (
        get_all_supported_aspect_ratios,
    )

    if cap == model_tiles:
        return item
    pixels, ids, mask = (item[k] for k in IMAGE_KEYS)
    extra = model_tiles - pixels.shape[1]
    pixels = torch.cat([pixels, pixels.new_zeros(pixels.shape[0], extra, *pixels.shape[2:])], 1)
    mask = torch.cat([mask, mask.new_zeros(mask.shape[0], extra)], 1)
    ours, theirs = (
        get_all_supported_aspect_ratios(cap),
        get_all_supported_aspect_ratios(model_tiles),
    )
    mapped = [theirs.index(ours[int(i) - 1]) + 1 if int(i) > 0 else 0 for i in ids]
    return {
        "pixel_values": pixels,
        "aspect_ratio_ids": torch.tensor(mapped),
        "aspect_ratio_mask": mask,
    }


def batch_images(
    rows: list[dict[str, Any]], input_ids: torch.Tensor, image_token_id: int
) -> dict[str, Any]:
    """pixel_values, aspect_ratio_ids, aspect_ratio_mask and cross_attention_mask of a batch,
    from each row's image tensors ({} when no row has an image) and the padded input_ids."""
    import torch
    from transformers.models.mllama.processing_mllama import (
        convert_sparse_cross_attention_mask_to_dense,
        get_cross_attention_token_mask,
    )

    present = [r for r in rows if r]
    if not present:
        return {}
    first = present[0]["pixel_values"]
    tiles, most = first.shape[1], max(len(r["aspect_ratio_ids"]) for r in present)
    size = len(rows)
    pixels = first.new_zeros(size, most, *first.shape[1:])
    ids = torch.zeros(size, most, dtype=torch.long)
    mask = torch.zeros(size, most, tiles, dtype=torch.long)
    mask[:, :, 0] = 1  # the processor's padding image: one (empty) tile
    num_tiles = []
    for i, r in enumerate(rows):
        n = len(r.get("aspect_ratio_ids", ()))
        if n:
            pixels[i, :n] = r["pixel_values"]
            ids[i, :n] = r["aspect_ratio_ids"]
            mask[i, :n] = r["aspect_ratio_mask"]
        num_tiles.append(mask[i, :n].sum(-1).tolist())
    tokens = [get_cross_attention_token_mask(row, image_token_id) for row in input_ids.tolist()]
    dense = convert_sparse_cross_attention_mask_to_dense(
        tokens, num_tiles, max_num_tiles=tiles, length=input_ids.shape[1]
    )  # as many images as the most <|image|> tokens of a row: none for dummy-only batches
    cross = torch.zeros(size, input_ids.shape[1], most, tiles, dtype=torch.long)
    cross[:, :, : dense.shape[2]] = torch.as_tensor(dense, dtype=torch.long)
    return {
        "pixel_values": pixels,
        "aspect_ratio_ids": ids,
        "aspect_ratio_mask": mask,
        "cross_attention_mask": cross,
    }
