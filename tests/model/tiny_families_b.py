"""Tiny Idefics3, SmolVLM, LLaVA-NeXT and LLaVA-OneVision checkpoints built from config (no
network), for test_families_b.py: real tokenizer classes (GPT2Tokenizer for SmolVLM and
Idefics3, LlamaTokenizer for LLaVA-NeXT, Qwen2Tokenizer for LLaVA-OneVision) over a BPE trained
on the test corpus, the models' own PIL image processors and configs, saved as a hub checkpoint
dir holds them. SmolVLM's and LLaVA-OneVision's processors hold a video processor that needs
torchvision; their processor files are written as save_pretrained writes them (the
processor_config.json names the class and its settings) and generalist.model.videoless loads
them here."""

from __future__ import annotations

import importlib.util
import io
import json
from dataclasses import replace
from pathlib import Path

import torch

spec = importlib.util.spec_from_file_location(
    "_tiny_vlms_b", Path(__file__).with_name("tiny_vlms.py")
)
tiny_vlms = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tiny_vlms)

ROW_COL = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
IDEFICS_SPECIALS = ["<|endoftext|>", "<fake_token_around_image>", "<image>", "<global-img>"]
IDEFICS_SPECIALS += ["<end_of_utterance>", *ROW_COL]
LLAMA_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]  # anyres grids of 32 px tiles
FAMILIES = ("idefics3", "smolvlm", "llava_next", "llava_onevision")
TILED = {"idefics3", "smolvlm"}  # the others: anyres
TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
    "initializer_range": 0.5,  # logits with scale: a tiny model fits in a few steps
}
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
VISION |= {"num_attention_heads": 2, "image_size": 32}


def _byte_level(corpus, specials):
    from tokenizers import pre_tokenizers

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    return tiny_vlms.bpe(corpus, specials, None, byte_level, byte_level.alphabet(), 600)


def _text(tok, **extra):
    return {
        **TEXT,
        "vocab_size": len(tok),
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": tok.bos_token_id,
        **extra,
    }


def _save(model, tok, root, *parts):
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(root)
    for part in parts:
        part.save_pretrained(root)
    return root


def idefics_parts(corpus, model_type="idefics3"):
    """(tokenizer, image processor): 32 px tiles from images resized to a 64 px longest edge."""
    from transformers import GPT2Tokenizer, Idefics3ImageProcessorPil, SmolVLMImageProcessorPil

    vocab, merges = _byte_level(corpus, IDEFICS_SPECIALS)
    tok = GPT2Tokenizer(
        vocab=vocab,
        merges=merges,
        pad_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<end_of_utterance>",
        extra_special_tokens=IDEFICS_SPECIALS[1:],
    )
    cls = Idefics3ImageProcessorPil if model_type == "idefics3" else SmolVLMImageProcessorPil
    images = cls(size={"longest_edge": 64}, max_image_size={"longest_edge": 32})
    return tok, images


def save_tiny_idefics3(root, corpus, model_type="idefics3"):
    """Idefics3Config / SmolVLMConfig: SigLIP-like tower on 32 px tiles of 8 px patches, pixel
    shuffle by 2: 4 <image> tokens per tile, a Llama text model."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
    )

    tok, images = idefics_parts(corpus, model_type)
    image_id = tok.convert_tokens_to_ids("<image>")
    config_cls, model_cls = (
        (Idefics3Config, Idefics3ForConditionalGeneration)
        if model_type == "idefics3"
        else (SmolVLMConfig, SmolVLMForConditionalGeneration)
    )
    config = config_cls(
        vision_config={**VISION, "patch_size": 8},
        text_config={**_text(tok), "model_type": "llama"},
        scale_factor=2,
        image_token_id=image_id,
    )
    torch.manual_seed(0)
    model = model_cls(config)
    if model_type == "idefics3":
        processor = Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=4)
        return _save(model, tok, root, processor)
    _save(model, tok, root, tok, images)
    settings = {"processor_class": "SmolVLMProcessor", "image_seq_len": 4}
    (root / "processor_config.json").write_text(json.dumps(settings) + "\n")
    return root


def save_tiny_smolvlm(root, corpus):
    return save_tiny_idefics3(root, corpus, "smolvlm")


def save_tiny_llava_next(root, corpus):
    """LlavaNextConfig: CLIP tower on 32 px tiles of 16 px patches (4 tokens a tile, CLS
    dropped), anyres over PINPOINTS, a Llama text model; LlamaTokenizer (byte fallback)."""
    from tokenizers import normalizers, pre_tokenizers
    from transformers import (
        CLIPVisionConfig,
        LlamaTokenizer,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    vocab, merges = tiny_vlms.bpe(
        corpus,
        LLAMA_SPECIALS + byte_tokens,
        normalizers.Replace(" ", "▁"),
        pre_tokenizers.Split(" ", "merged_with_previous"),
        size=600,
    )
    tok = LlamaTokenizer(vocab=vocab, merges=merges, pad_token="<pad>")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    images = LlavaNextImageProcessorPil(
        size={"shortest_edge": 32},
        crop_size={"height": 32, "width": 32},
        image_grid_pinpoints=PINPOINTS,
    )
    processor = LlavaNextProcessor(
        image_processor=images,
        tokenizer=tok,
        patch_size=16,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(**VISION, patch_size=16, projection_dim=32),
        text_config={**_text(tok), "model_type": "llama"},
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=PINPOINTS,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(config)
    return _save(model, tok, root, processor)


def save_tiny_llava_onevision(root, corpus):
    """LlavaOnevisionConfig: SigLIP tower on 32 px tiles of 16 px patches (4 tokens a tile),
    anyres over PINPOINTS, a Qwen2 text model; Qwen2Tokenizer."""
    from transformers import (
        LlavaOnevisionConfig,
        LlavaOnevisionForConditionalGeneration,
        LlavaOnevisionImageProcessorPil,
        Qwen2Tokenizer,
        SiglipVisionConfig,
    )

    vocab, merges = _byte_level(corpus, QWEN_SPECIALS)
    tok = Qwen2Tokenizer(
        vocab=vocab, merges=merges, eos_token="<|im_end|>", extra_special_tokens=QWEN_SPECIALS[1:]
    )
    images = LlavaOnevisionImageProcessorPil(
        size={"height": 32, "width": 32}, image_grid_pinpoints=PINPOINTS
    )
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**VISION, patch_size=16),
        text_config={**_text(tok, bos_token_id=None), "model_type": "qwen2"},
        image_token_index=ids["<image>"],
        video_token_index=ids["<video>"],
        image_grid_pinpoints=PINPOINTS,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(config)
    _save(model, tok, root, tok, images)
    settings = {
        "processor_class": "LlavaOnevisionProcessor",
        "num_image_tokens": 4,
        "vision_feature_select_strategy": "full",
        "vision_aspect_ratio": "anyres_max_9",
    }
    (root / "processor_config.json").write_text(json.dumps(settings) + "\n")
    return root


SAVERS = {
    "idefics3": save_tiny_idefics3,
    "smolvlm": save_tiny_smolvlm,
    "llava_next": save_tiny_llava_next,
    "llava_onevision": save_tiny_llava_onevision,
}


def bundle(path, **lora):
    """build_model on a saved dir by path, LoRA r=4 (keyword overrides)."""
    from generalist.model.build import build_model
    from generalist.model.config import parse_lora_settings, parse_model_config

    cfg = parse_model_config({"name_or_path": str(path)})
    return build_model(cfg, parse_lora_settings({"r": 4, "dropout": 0.0, **lora}))


def png(color, size):
    """PNG bytes of a `size` (width, height) image of one color."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def example(h, n, color, size):
    """An image example whose image has its own size (own aspect ratio: own tile count)."""
    return replace(h.image_example(n, color=color), images=(png(color, size),))


def pil(ex):
    """An example's images as the processor takes them."""
    from PIL import Image

    return [Image.open(io.BytesIO(d)).convert("RGB") for d in ex.images]
