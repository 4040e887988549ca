"""Tiny PaliGemma and Qwen2-VL checkpoints built from config (no network), for
test_paligemma_qwen2_vl.py: real transformers tokenizer classes (GemmaTokenizer,
Qwen2Tokenizer) over a BPE trained on the test corpus, the models' own image processors (PIL
backend) and configs, saved with save_pretrained as a hub checkpoint dir holds them."""

from __future__ import annotations

import json

import torch

GEMMA_SPECIALS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<image>"]
QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>"]
QWEN_SPECIALS += ["<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def bpe(corpus, specials, normalizer=None, pre=None, alphabet=(), size=400):
    """(vocab, merges) of a BPE trained on `corpus`, to build a real HF tokenizer class from."""
    from tokenizers import Tokenizer, models, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer, tok.pre_tokenizer = normalizer, pre
    trainer = trainers.BpeTrainer(
        vocab_size=size, special_tokens=specials, initial_alphabet=list(alphabet)
    )
    tok.train_from_iterator(corpus, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


def sentencepiece_bpe(corpus, specials, size=600):
    """(vocab, merges) in the SentencePiece layout of Gemma's and Llama's tokenizers: "▁" for a
    space, merged with the word after it, and the 256 <0xNN> byte-fallback tokens."""
    from tokenizers import normalizers, pre_tokenizers

    byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
    return bpe(
        corpus,
        list(specials) + byte_tokens,
        normalizers.Replace(" ", "▁"),
        pre_tokenizers.Split(" ", "merged_with_previous"),
        size=size,
    )


def save_tiny_paligemma(root, corpus):
    """PaliGemmaConfig(tiny SigLIP, tiny Gemma) + PaliGemmaProcessor(SigLIP PIL, GemmaTokenizer)."""
    from transformers import (
        GemmaConfig,
        GemmaTokenizer,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipImageProcessorPil,
        SiglipVisionConfig,
    )

    vocab, merges = sentencepiece_bpe(corpus, GEMMA_SPECIALS)
    tok = GemmaTokenizer(vocab=vocab, merges=merges)
    images = SiglipImageProcessorPil(size={"height": 32, "width": 32}, image_seq_length=4)
    processor = PaliGemmaProcessor(image_processor=images, tokenizer=tok)  # adds <loc>/<seg>
    vision = SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=32,
        patch_size=16,  # (32 / 16)^2 = 4 image tokens, as image_seq_length says
    )
    text = GemmaConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        vocab_size=len(tok),
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=tok.bos_token_id,
        # a wide init: the tied, frozen LM head must give LoRA logits to fit in a few steps
        initializer_range=1.0,
    )
    config = PaliGemmaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=processor.image_token_id,
        projection_dim=32,
        hidden_size=32,
        vocab_size=len(tok),
    )
    torch.manual_seed(0)
    model = PaliGemmaForConditionalGeneration(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(root)
    processor.save_pretrained(root)
    return root


def qwen_parts(corpus):
    """(Qwen2Tokenizer, Qwen2VLImageProcessorPil): 8 px patches merged 2x2, 16..64 px images."""
    from tokenizers import pre_tokenizers
    from transformers import Qwen2Tokenizer, Qwen2VLImageProcessorPil

    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    vocab, merges = bpe(corpus, QWEN_SPECIALS, None, byte_level, byte_level.alphabet(), 600)
    tok = Qwen2Tokenizer(
        vocab=vocab, merges=merges, eos_token="<|im_end|>", extra_special_tokens=QWEN_SPECIALS[1:]
    )
    images = Qwen2VLImageProcessorPil(
        patch_size=8, merge_size=2, temporal_patch_size=2, min_pixels=16 * 16, max_pixels=64 * 64
    )
    return tok, images


def save_tiny_qwen2_vl(root, corpus):
    """Qwen2VLConfig (tiny vision tower and M-RoPE text model) saved with its tokenizer, image
    processor and processor config, as a hub checkpoint dir holds them."""
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    tok, images = qwen_parts(corpus)
    ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIALS}
    config = Qwen2VLConfig(
        text_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "vocab_size": len(tok),
            "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},  # head_dim 16
            "initializer_range": 0.5,  # logits with scale: a tiny model fits in a few steps
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
            "bos_token_id": None,  # Qwen2 has no bos (the default id is outside this vocab)
        },
        vision_config={
            "depth": 1,
            "embed_dim": 32,
            "hidden_size": 32,
            "num_heads": 2,
            "mlp_ratio": 2,
            "patch_size": 8,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    torch.manual_seed(0)
    model = Qwen2VLForConditionalGeneration(config)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.save_pretrained(root)
    tok.save_pretrained(root)
    images.save_pretrained(root)
    # what Qwen2VLProcessor.save_pretrained writes (it cannot be built here: no torchvision)
    (root / "processor_config.json").write_text('{"processor_class": "Qwen2VLProcessor"}\n')
    return root
