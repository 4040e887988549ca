"""Per-family token layout: how a prompt's "<image>" markers, the target and the extra per-token
ids look for each kind of vision-language model. The Collator asks this module; the rest of the
batch layout (masking, truncation, dummy images, padding) is the same for every family.

- default (LLaVA and most image-text-to-text models): each marker becomes the processor's image
  token, which the processor expands; the target follows after a space.
- blip2: the processor puts the query tokens before the text; a marker becomes the word "image".
- paligemma: images go first, as PaliGemma was trained ("<image>"*n, then bos, the prompt and
  "\n", which the processor adds), so a marker in the text becomes the word "image"; the target
  follows the "\n" without a space. `token_type_ids` mark the prefix (0: images and prompt)
  and the suffix (1: target + eos): PaliGemma attends bidirectionally within the prefix and
  causally in the suffix. Without them training would see the prefix causally while a
  pretrained PaliGemma expects the prefix-LM mask. Its processor refuses text without images,
  so text-only prompts are tokenised as "<bos>prompt\n" directly.
- mrope (Qwen2-VL, Qwen2.5-VL): a marker becomes <|vision_start|><|image_pad|><|vision_end|>
  (the processor expands the pad token by the image's patch grid); `mm_token_type_ids` (1 on
  image tokens) let the model build its 3-D M-RoPE positions; pixel rows are patches, split per
  example by `image_grid_thw`. Its position builder takes image grids in batch order from the
  attended image tokens only, so a masked dummy image followed by a real image in a later row
  would shift every later grid: dummies are dropped from a batch that has a real image (the
  vision tower runs on the real ones anyway). Qwen3-VL has the same layout.
- gemma3 (Gemma 3, MedGemma): a marker becomes <start_of_image>, which the processor expands to
  "\n\n<start_of_image>" + soft image tokens + "<end_of_image>\n\n"; `token_type_ids` are 1 on
  the soft image tokens (the model's image_token_id), as Gemma3Processor returns them: Gemma 3
  attends bidirectionally within each image's block. A masked dummy image is a block of its own
  that no real token attends (its keys are masked like padding).
- mllama (Llama 3.2 Vision): a marker stays <|image|> (not expanded: the text attends the
  image's tiles by cross-attention); pixel tensors are per example [images, tiles, ...] and the
  cross-attention mask is built per token at padding time (generalist.batching.mllama_inputs).
  The dummy image of a text-only row has no token and no token attends it.
- tiled (Idefics3, SmolVLM) and anyres (LLaVA-NeXT, LLaVA-OneVision): a marker is the
  processor's "<image>", which it expands by the image's tiles; images go to the processor per
  example (nested lists); the tensors are split and padded by generalist.batching.tiled_images.
  Truncation never cuts a tiled image block's frame tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from generalist.batching import mllama_inputs
from generalist.batching.mllama_inputs import is_mllama_output
from generalist.batching.tiled_images import (
    ANYRES_TYPES,
    TILED_TYPES,
    LayoutKind,
    split_tiled,
    tiled_protected_ids,
)
from generalist.catalog.task import IMAGE_TOKEN
from generalist.model.bundle import ModelBundle

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
MROPE_TYPES = {"qwen2_vl", "qwen2_5_vl", "qwen3_vl"}
# processor outputs that are not image tensors: the collator builds its own per-token ids, and
# PaliGemma's processor returns labels, never model inputs here
TEXT_KEYS = {"input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids", "labels"}


@dataclass(frozen=True)
class TokenLayout:
    """What differs between VLM families in a training sequence (see the module docstring)."""

    kind: LayoutKind = "default"
    image_token: str | None = IMAGE_TOKEN  # the processor's image token (None: text-only LM)
    target_prefix: str = " "  # put before the target text when it is tokenised
    soft_token_id: int | None = None  # gemma3: the image token the processor expands to

    @property
    def nested_images(self) -> bool:
        """The processor takes one list of images per prompt, not one flat list (Gemma 3,
        Mllama, Idefics3, SmolVLM, LLaVA-NeXT / OneVision)."""
        return self.kind in ("gemma3", "mllama", "tiled", "anyres")

    @property
    def image_token_types(self) -> bool:
        """token_type_ids: 1 on image tokens, 0 elsewhere (Gemma 3's bidirectional blocks)."""
        return self.kind == "gemma3"

    @property
    def prefix_lm(self) -> bool:
        """token_type_ids: 0 on the prompt (prefix), 1 on the target (PaliGemma)."""
        return self.kind == "paligemma"

    @property
    def mm_token_types(self) -> bool:
        """mm_token_type_ids: 1 on image tokens, for M-RoPE positions (Qwen2-VL)."""
        return self.kind == "mrope"

    @property
    def dummy_only_without_images(self) -> bool:
        """A dummy image may not sit in a batch beside real images (M-RoPE grid order)."""
        return self.kind in ("mrope", "mllama")

    def processor_images(self, per_example: list[list[Any]]) -> list[Any]:
        """The images argument of one processor call: flat, or one list per example."""
        return per_example if self.nested_images else [i for ims in per_example for i in ims]

    def prompt_text(self, prompt: str, n_images: int) -> str:
        """The text handed to the processor for a prompt with `n_images` "<image>" markers."""
        if self.kind == "text":
            return prompt
        if self.kind == "blip2":
            return prompt.replace(IMAGE_TOKEN, "image")
        if self.kind == "paligemma":
            return IMAGE_TOKEN * n_images + prompt.replace(IMAGE_TOKEN, "image")
        return prompt.replace(IMAGE_TOKEN, self.marker_text())

    def marker_text(self) -> str:
        """What one image marker becomes in the processor's text."""
        if self.kind == "mrope":
            return f"{VISION_START}{self.image_token}{VISION_END}"
        return str(self.image_token)

    def dummy_text(self) -> str:
        """The processor text of the blank dummy image (Mllama's ids are then dropped: its
        image is cross-attended, no token stands for it)."""
        return "" if self.kind == "blip2" else self.marker_text()

    def text_only_ids(self, tokenizer: PreTrainedTokenizerBase, text: str) -> list[int] | None:
        """Token ids for a prompt without images when the processor would refuse it; else None."""
        if self.kind != "paligemma":
            return None
        ids = tokenizer(f"{text}\n", add_special_tokens=False)["input_ids"]
        return [tokenizer.bos_token_id, *ids]

    def protected_ids(self, tokenizer: PreTrainedTokenizerBase) -> set[int]:
        """Token ids that left truncation must never cut (besides the image token itself)."""
        if self.kind == "tiled":
            return tiled_protected_ids(tokenizer)
        if self.kind != "mrope":
            return set()
        return {int(tokenizer.convert_tokens_to_ids(t)) for t in (VISION_START, VISION_END)}


def layout_for(bundle: ModelBundle) -> TokenLayout:
    """The layout for a ModelBundle, from its family and its transformers config's model_type."""
    if bundle.image_token is None:
        return TokenLayout("text", None)
    if bundle.family == "blip2":
        return TokenLayout("blip2", bundle.image_token)
    config = getattr(bundle.base_model, "config", None)
    model_type = getattr(config, "model_type", "")
    if model_type == "paligemma":
        return TokenLayout("paligemma", bundle.image_token, target_prefix="")
    if model_type in MROPE_TYPES:
        return TokenLayout("mrope", bundle.image_token)
    if model_type == "gemma3":
        return TokenLayout("gemma3", bundle.image_token, soft_token_id=int(config.image_token_id))
    if model_type == "mllama":
        return TokenLayout("mllama", bundle.image_token)
    if model_type in TILED_TYPES:
        return TokenLayout("tiled", bundle.image_token)
    if model_type in ANYRES_TYPES:
        return TokenLayout("anyres", bundle.image_token)
    return TokenLayout("default", bundle.image_token)


def split_images(enc: Mapping[str, Any], counts: list[int]) -> list[dict[str, Any]] | None:
    """Per-example image tensors from one batched processor call with `counts` images each.

    pixel_values rows are one per image (LLaVA, PaliGemma) or, with image_grid_thw, the
    image's patches (Qwen2-VL: grid t*h*w rows per image); tiles (Idefics3, LLaVA-NeXT, ...) are
    generalist.batching.tiled_images's. None for any other output layout: the caller then
    processes the examples one by one.
    """
    import torch

    keys = set(enc) - TEXT_KEYS - {"cross_attention_mask"}
    if is_mllama_output(keys):  # [batch, images, tiles, ...]: rebuilt per batch
        return mllama_inputs.split(enc, counts)
    if "pixel_attention_mask" in keys or "image_sizes" in keys:
        return split_tiled(enc, counts)
    pixels = enc["pixel_values"]
    if isinstance(pixels, (list, tuple)):  # one array per image (no return_tensors)
        pixels = torch.stack([torch.as_tensor(p) for p in pixels])
    pixels = torch.as_tensor(pixels)
    if keys == {"pixel_values"}:
        rows = [1] * sum(counts)
    elif keys == {"pixel_values", "image_grid_thw"}:
        grid = torch.as_tensor(enc["image_grid_thw"])
        rows = grid.prod(dim=-1).tolist()
    else:
        return None
    if len(pixels) != sum(rows):
        return None
    out, at, image = [], 0, 0
    for n in counts:
        take = sum(rows[image : image + n])
        item = {"pixel_values": pixels[at : at + take]}
        if "image_grid_thw" in keys:
            item["image_grid_thw"] = grid[image : image + n]
        out.append(item)
        at, image = at + take, image + n
    return out
