"""Export: merge the LoRA adapter into a plain Hugging Face model (`generalist export`).

The output is an ordinary Hugging Face model directory (config, safetensors weights,
generation config, processor and tokenizer) that transformers loads without this package:

    AutoProcessor.from_pretrained(out); AutoModelForImageTextToText.from_pretrained(out)
    (AutoTokenizer / AutoModelForCausalLM for a text-only model)

DIR is a training checkpoint (holding `model/`) or a model dir itself (see generalist.model).
Tested for tiny LLaVA, BLIP-2, PaliGemma, Qwen2-VL and causal LMs. A Qwen2-VL trained where
torchvision was unusable exports its tokenizer, image processor and a processor_config.json
naming Qwen2VLProcessor: transformers builds that processor wherever torchvision is installed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from generalist.atomic import atomic_dir
from generalist.errors import ConfigError
from generalist.model.model_dir import find_model_dir, load_model_dir


def export(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    overwrite: bool = False,
    dtype: str | None = None,
) -> Path:
    """Merge and save; written to a temporary sibling and renamed, so `out` is never half done."""
    import torch

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a directory path")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} exists and is not empty; pass --overwrite or a new path")
    src = find_model_dir(checkpoint)  # checks the input before loading anything heavy
    bundle = load_model_dir(src)
    model = bundle.merged_model().eval()
    if dtype:
        model = model.to(getattr(torch, dtype))
    info = {
        "exported_from": str(src.resolve()),
        "family": bundle.family,
        "image_token": bundle.image_token,
        "lora_merged": bundle.lora.enabled,
    }
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        bundle.processor.save_pretrained(tmp)
        (tmp / "generalist_export.json").write_text(json.dumps(info, indent=2) + "\n")
    return out
