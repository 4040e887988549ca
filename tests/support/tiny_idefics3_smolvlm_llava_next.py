"""Tiny Idefics3, SmolVLM, LLaVA-NeXT and LLaVA-OneVision checkpoints built from config (no
network), for test_idefics3_smolvlm_llava_next.py: real tokenizer classes (GPT2Tokenizer for
SmolVLM and Idefics3, LlamaTokenizer for LLaVA-NeXT, Qwen2Tokenizer for LLaVA-OneVision) over
a BPE trained on the test corpus, the models' own PIL image processors and configs, saved as a
hub checkpoint dir holds them. SmolVLM's and LLaVA-OneVision's processors hold a video
processor that needs torchvision; their processor files are written as save_pretrained
writes them (the processor_config.json names the class and its settings) and
generalist.model.videoless loads them here."""

from __future__ import annotations

import io
import json
from dataclasses import replace

import torch

from support import tiny_paligemma_qwen2_vl as tiny_vlms

ROW_COL = [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
IDEFICS_SPECIALS = ["<|endoftext|>", "<fake_token_around_image>", "<image>", "<global-img>"]
IDEFICS_SPECIALS += ["<end_of_utterance>", *ROW_COL]
LLAMA_SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<image>"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
PINPOINTS = [[32, 32], [32, 64], [64, 32], [64, 64]]  # anyres grids of 32 px tiles
# tiles, patches, pixel shuffle, longest edge, grids: the tiny ones, and the published models'
# (Idefics3-8B, SmolVLM-256M, LLaVA-NeXT (1.6), LLaVA-OneVision: tests/model/test_image_tiles)
TINY_GEOMETRY = {"tile": 32, "patch": 8, "scale": 2, "longest": 64}
TINY_ANYRES = {"tile": 32, "patch": 16, "pinpoints": PINPOINTS}
REAL_GEOMETRY = {
    "idefics3": {"tile": 364, "patch": 14, "scale": 2, "longest": 4 * 364},
    "smolvlm": {"tile": 512, "patch": 16, "scale": 4, "longest": 2048},
    "llava_next": {"tile": 336, "patch": 14, "pinpoints": [[336, 672], [672, 336], [672, 672]]},
    "llava_onevision": {"tile": 384, "patch": 14, "pinpoints": None},  # its 36 grids
}
REAL_GEOMETRY["llava_next"]["pinpoints"] += [[1008, 336], [336, 1008]]
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


def idefics_parts(corpus, model_type="idefics3", geometry=TINY_GEOMETRY):
    """(tokenizer, image processor): tiles of images resized to a longest edge (tiny: 32 px
    tiles, 64 px)."""
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
    edges = {"longest_edge": geometry["longest"]}, {"longest_edge": geometry["tile"]}
    return tok, cls(size=edges[0], max_image_size=edges[1])


def save_tiny_idefics3(root, corpus, model_type="idefics3", geometry=TINY_GEOMETRY):
    """Idefics3Config / SmolVLMConfig: SigLIP-like tower (tiny: 32 px tiles of 8 px patches,
    pixel shuffle by 2: 4 <image> tokens per tile), a Llama text model."""
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3Processor,
        SmolVLMConfig,
        SmolVLMForConditionalGeneration,
    )

    tok, images = idefics_parts(corpus, model_type, geometry)
    tile, patch, scale = geometry["tile"], geometry["patch"], geometry["scale"]
    seq = (tile // patch) ** 2 // scale**2
    image_id = tok.convert_tokens_to_ids("<image>")
    config_cls, model_cls = (
        (Idefics3Config, Idefics3ForConditionalGeneration)
        if model_type == "idefics3"
        else (SmolVLMConfig, SmolVLMForConditionalGeneration)
    )
    config = config_cls(
        vision_config={**VISION, "patch_size": patch, "image_size": tile},
        text_config={**_text(tok), "model_type": "llama"},
        scale_factor=scale,
        image_token_id=image_id,
    )
    torch.manual_seed(0)
    model = model_cls(config)
    if model_type == "idefics3":
        processor = Idefics3Processor(image_processor=images, tokenizer=tok, image_seq_len=seq)
        return _save(model, tok, root, processor)
    _save(model, tok, root, tok, images)
    settings = {"processor_class": "SmolVLMProcessor", "image_seq_len": seq}
    (root / "processor_config.json").write_text(json.dumps(settings) + "\n")
    return root


def save_tiny_smolvlm(root, corpus, geometry=TINY_GEOMETRY):
    return save_tiny_idefics3(root, corpus, "smolvlm", geometry)


def save_tiny_llava_next(root, corpus, geometry=TINY_ANYRES):
    """LlavaNextConfig: CLIP tower (tiny: 32 px tiles of 16 px patches, 4 tokens a tile, CLS
    dropped), anyres over PINPOINTS, a Llama text model; LlamaTokenizer (byte fallback)."""
    from transformers import (
        CLIPVisionConfig,
        LlamaTokenizer,
        LlavaNextConfig,
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
    )

    vocab, merges = tiny_vlms.sentencepiece_bpe(corpus, LLAMA_SPECIALS)
    tok = LlamaTokenizer(vocab=vocab, merges=merges, pad_token="<pad>")
    tok.add_special_tokens({"additional_special_tokens": ["<image>"]})
    tile, patch, grids = geometry["tile"], geometry["patch"], geometry["pinpoints"]
    images = LlavaNextImageProcessorPil(
        size={"shortest_edge": tile},
        crop_size={"height": tile, "width": tile},
        image_grid_pinpoints=grids,
    )
    processor = LlavaNextProcessor(
        image_processor=images,
        tokenizer=tok,
        patch_size=patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
    )
    config = LlavaNextConfig(
        vision_config=CLIPVisionConfig(
            **{**VISION, "image_size": tile}, patch_size=patch, projection_dim=32
        ),
        text_config={**_text(tok), "model_type": "llama"},
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=grids,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = LlavaNextForConditionalGeneration(config)
    return _save(model, tok, root, processor)


def save_tiny_llava_onevision(root, corpus, geometry=TINY_ANYRES):
    """LlavaOnevisionConfig: SigLIP tower (tiny: 32 px tiles of 16 px patches, 4 tokens a
    tile), anyres over PINPOINTS (None: the processor's own), a Qwen2 text model."""
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
    tile, patch = geometry["tile"], geometry["patch"]
    images = LlavaOnevisionImageProcessorPil(size={"height": tile, "width": tile})
    if geometry["pinpoints"] is not None:
        images.image_grid_pinpoints = geometry["pinpoints"]
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    config = LlavaOnevisionConfig(
        vision_config=SiglipVisionConfig(**{**VISION, "image_size": tile}, patch_size=patch),
        text_config={**_text(tok, bos_token_id=None), "model_type": "qwen2"},
        image_token_index=ids["<image>"],
        video_token_index=ids["<video>"],
        image_grid_pinpoints=images.image_grid_pinpoints,
        vision_feature_select_strategy="full",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = LlavaOnevisionForConditionalGeneration(config)
    _save(model, tok, root, tok, images)
    settings = {
        "processor_class": "LlavaOnevisionProcessor",
        "num_image_tokens": (tile // patch) ** 2,
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
    from generalist.model.config import LoraSettings, ModelConfig

    cfg = ModelConfig.parse({"name_or_path": str(path)})
    return build_model(cfg, LoraSettings.parse({"r": 4, "dropout": 0.0, **lora}))


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
