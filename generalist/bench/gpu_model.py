"""A Qwen2-VL checkpoint directory with random weights, shaped by a spec (configs/gpu_check_*.yaml),
for the GPU check: real widths, depths, vocabulary and image size, no download.

The directory holds what a hub checkpoint holds (config.json, safetensors weights, tokenizer,
image processor, processor_config.json), so training loads it through the same auto classes as
Qwen/Qwen2-VL-2B-Instruct. The tokenizer is a byte-level BPE (Qwen2Tokenizer) trained on the
mixture's texts; the model keeps the spec's full vocab_size (its embedding and LM head cost what
the real ones do), of which the tokenizer uses the first few thousand ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>"]
SPECIALS += ["<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def train_qwen_tokenizer(texts: Iterable[str], vocab_size: int) -> Any:
    """A Qwen2Tokenizer over a byte-level BPE trained on `texts` (with Qwen's special tokens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = byte_level
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=byte_level.alphabet()
    )
    tok.train_from_iterator(texts, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    extra = SPECIALS[1:]
    return Qwen2Tokenizer(
        vocab=model["vocab"], merges=merges, eos_token="<|im_end|>", extra_special_tokens=extra
    )


def write_random_qwen2_vl(
    spec: Mapping[str, Any],
    image_size: int,
    texts: Iterable[str],
    out: Path,
    tokenizer_vocab: int,
    dtype: torch.dtype,
    device: torch.device,
) -> dict[str, int]:
    """Write the checkpoint dir; returns its parameter counts (total, vision tower)."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers import Qwen2VLImageProcessorPil as ImageProcessor

    tok = train_qwen_tokenizer(texts, tokenizer_vocab)
    ids = {t: tok.convert_tokens_to_ids(t) for t in SPECIALS}
    vision = dict(spec["vision_config"])
    patch, merge = vision["patch_size"], vision["spatial_merge_size"]
    pixels = image_size * image_size  # square images: exactly (image_size / patch)^2 patches
    images = ImageProcessor(
        patch_size=patch,
        merge_size=merge,
        temporal_patch_size=vision["temporal_patch_size"],
        min_pixels=pixels,
        max_pixels=pixels,
    )
    text = dict(spec["text_config"])
    text |= {"eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    text["bos_token_id"] = None  # Qwen2 has no bos
    top = {k: v for k, v in spec.items() if k not in ("text_config", "vision_config")}
    config = Qwen2VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        **top,
    )
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        with torch.device(device):  # initialised where it is fast (the GPU), then saved
            model = Qwen2VLForConditionalGeneration(config).to(dtype)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(out)
    tok.save_pretrained(out)
    images.save_pretrained(out)
    # what Qwen2VLProcessor.save_pretrained writes (it cannot be built without torchvision)
    (out / "processor_config.json").write_text('{"processor_class": "Qwen2VLProcessor"}\n')
    counts = {"params": sum(p.numel() for p in model.parameters())}
    counts["vision_params"] = sum(p.numel() for p in model.model.visual.parameters())
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return counts
