"""`generalist export --checkpoint DIR --out DIR`: merge the LoRA adapter into a plain HF model.

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

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from generalist.atomic_dir import atomic_dir
from generalist.errors import ConfigError


def merged_model(bundle: Any) -> Any:
    """The bundle's model with the LoRA adapter merged in (peft merge_and_unload)."""
    from generalist.lora import unwrap

    model = bundle.model.merge_and_unload() if bundle.lora.enabled else unwrap(bundle.model)
    return model.eval()


def export(
    checkpoint: str | os.PathLike[str],
    out: str | os.PathLike[str],
    overwrite: bool = False,
    dtype: str | None = None,
) -> Path:
    """Merge and save; written to a temporary sibling and renamed, so `out` is never half done."""
    import torch

    from generalist.model import find_model_dir, load_model_dir

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; pass a directory path")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"--out {out} exists and is not empty; pass --overwrite or a new path")
    src = find_model_dir(checkpoint)  # checks the input before loading anything heavy
    bundle = load_model_dir(src)
    model = merged_model(bundle)
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="generalist export",
        description="Merge a checkpoint's LoRA adapter into its base model and save a plain "
        "Hugging Face model + processor.",
    )
    parser.add_argument("--checkpoint", required=True, help="checkpoint dir (or its model/ dir)")
    parser.add_argument("--out", required=True, help="output directory for the merged model")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    parser.add_argument(
        "--dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="cast the merged weights (default: the training dtype)",
    )
    args = parser.parse_args(argv)
    out = export(args.checkpoint, args.out, overwrite=args.overwrite, dtype=args.dtype)
    print(f"exported a plain Hugging Face model to {out}")
    return 0
