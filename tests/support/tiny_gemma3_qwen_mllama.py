"""Tiny Gemma 3 (MedGemma), Qwen2.5-VL, Qwen3-VL and Mllama (Llama 3.2 Vision) checkpoints built
from config (no network), for test_gemma3_qwen_mllama.py: real tokenizer classes over a BPE
trained on the test corpus (tiny_vlms.bpe), the models' own image processors (PIL backend) and
configs, saved with save_pretrained as a hub checkpoint dir holds them."""

from __future__ import annotations

import torch

from support import tiny_paligemma_qwen2_vl as tiny_vlms

GEMMA3_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_image>"]
GEMMA3_SPECIALS += ["<end_of_image>", "<image_soft_token>", "<start_of_turn>", "<end_of_turn>"]
MLLAMA_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|image|>", "<|eot_id|>"]
MLLAMA_SPECIALS += [
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|python_tag|>",
    "<|finetune_right_pad_id|>",
]
SMALL_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 16,
}


def _finish(model, tok, root, *savers):
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(root)
    for saver in savers:
        saver.save_pretrained(root)
    return root


def save_tiny_gemma3(root, corpus):
    """Gemma3Config (tiny SigLIP, tiny Gemma 3 text) + Gemma3Processor (its PIL image processor,
    GemmaTokenizer with <start_of_image>, <image_soft_token>, <end_of_image>): 4 soft tokens."""
    from tokenizers import AddedToken
    from transformers import (
        Gemma3Config,
        Gemma3ForConditionalGeneration,
        Gemma3ImageProcessorPil,
        Gemma3Processor,
        GemmaTokenizer,
    )

    vocab, merges = tiny_vlms.sentencepiece_bpe(corpus, GEMMA3_SPECIALS)
    extra = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>"}
    extra["image_token"] = "<image_soft_token>"
    tok = GemmaTokenizer(vocab=vocab, merges=merges, extra_special_tokens=extra, add_bos_token=True)
    # the turn markers are special added tokens in Gemma 3's tokenizer (ids 105, 106): one
    # token each in a chat rendering, and <end_of_turn> is what an -it model stops at
    turns = ["<start_of_turn>", "<end_of_turn>"]
    tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in turns])
    images = Gemma3ImageProcessorPil(size={"height": 32, "width": 32})
    processor = Gemma3Processor(image_processor=images, tokenizer=tok, image_seq_length=4)
    ids = {t: tok.convert_tokens_to_ids(t) for t in GEMMA3_SPECIALS}
    text = {
        **SMALL_TEXT,
        "vocab_size": len(tok),
        "sliding_window": 16,
        "pad_token_id": tok.pad_token_id,
        "eos_token_id": tok.eos_token_id,
        "bos_token_id": tok.bos_token_id,
        "initializer_range": 0.5,  # tied frozen LM head: LoRA needs logits with scale
    }
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 1,
        "num_attention_heads": 2,
        "image_size": 32,
        "patch_size": 8,  # 4x4 patches, pooled to 2x2 = mm_tokens_per_image
    }
    config = Gemma3Config(
        text_config=text,
        vision_config={"model_type": "siglip_vision_model", **vision},
        mm_tokens_per_image=4,
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
    )
    torch.manual_seed(0)
    model = Gemma3ForConditionalGeneration(config)
    return _finish(model, tok, root, processor)


def _qwen_vision(kind):
    common = {"depth": 1, "hidden_size": 32, "num_heads": 2, "patch_size": 8}
    common |= {"spatial_merge_size": 2, "temporal_patch_size": 2, "out_hidden_size": 32}
    if kind == "qwen2_5_vl":
        return {**common, "intermediate_size": 64, "window_size": 32, "fullatt_block_indexes": [0]}
    return {
        **common,
        "intermediate_size": 64,
        "num_position_embeddings": 64,
        "deepstack_visual_indexes": [0],
    }


def save_tiny_qwen_vl(root, corpus, kind="qwen2_5_vl"):
    """Qwen2_5_VLConfig or Qwen3VLConfig (tiny vision tower, M-RoPE text model) saved with the
    Qwen2Tokenizer, the Qwen2-VL PIL image processor and the processor config naming the real
    processor class (Qwen2_5_VLProcessor / Qwen3VLProcessor: they need torchvision here)."""
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
    )

    tok, images = tiny_vlms.qwen_parts(corpus)
    ids = {t: tok.convert_tokens_to_ids(t) for t in tiny_vlms.QWEN_SPECIALS}
    rope = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}
    if kind == "qwen3_vl":
        rope["mrope_interleaved"] = True
    text = {
        **SMALL_TEXT,
        "vocab_size": len(tok),
        "rope_parameters": rope,
        "initializer_range": 0.5,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": None,
    }
    config_cls, model_cls, processor_name = {
        "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, "Qwen2_5_VLProcessor"),
        "qwen3_vl": (Qwen3VLConfig, Qwen3VLForConditionalGeneration, "Qwen3VLProcessor"),
    }[kind]
    config = config_cls(
        text_config=text,
        vision_config=_qwen_vision(kind),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    model = model_cls(config)
    _finish(model, tok, root, tok, images)
    (root / "processor_config.json").write_text(f'{{"processor_class": "{processor_name}"}}\n')
    return root


def mllama_tokenizer(corpus):
    """A Llama 3 style byte-level BPE as PreTrainedTokenizerFast (what Llama 3.2 Vision ships):
    <|begin_of_text|> added in front, <|eot_id|> as eos, <|image|> as a special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    vocab, merges = tiny_vlms.bpe(
        corpus, MLLAMA_SPECIALS, None, byte_level, byte_level.alphabet(), 600
    )
    backend = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer, backend.decoder = byte_level, decoders.ByteLevel()
    bos = "<|begin_of_text|>"
    backend.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, vocab[bos])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token=bos,
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        extra_special_tokens=MLLAMA_SPECIALS,
    )


def save_tiny_mllama(root, corpus, max_tiles=4):
    """MllamaConfig (a tiny tiled vision tower, a 3-layer text model whose layer 1 is a
    cross-attention layer) + MllamaProcessor (its PIL image processor: 16 px tiles, up to
    `max_tiles` per image; the Llama 3 style tokenizer above)."""
    from transformers import (
        MllamaConfig,
        MllamaForConditionalGeneration,
        MllamaImageProcessorPil,
        MllamaProcessor,
    )

    tok = mllama_tokenizer(corpus)
    images = MllamaImageProcessorPil(size={"height": 16, "width": 16}, max_image_tiles=max_tiles)
    processor = MllamaProcessor(image_processor=images, tokenizer=tok)
    vision = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_global_layers": 1,
        "attention_heads": 2,
        "intermediate_size": 64,
        "intermediate_layers_indices": [0],
        "vision_output_dim": 64,  # hidden_size * (1 + len(intermediate_layers_indices))
        "image_size": 16,
        "patch_size": 8,
        "max_num_tiles": max_tiles,
    }
    text = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "cross_attention_layers": [1],
        "vocab_size": len(tok),
        "initializer_range": 0.5,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    config = MllamaConfig(
        vision_config=vision, text_config=text, image_token_index=processor.image_token_id
    )
    torch.manual_seed(0)
    model = MllamaForConditionalGeneration(config)
    with torch.no_grad():  # a trained model's gates are open; at 0 the image could not be seen
        for name, param in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                param.fill_(1.0)
    return _finish(model, tok, root, processor)
