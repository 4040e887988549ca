"""A tiny BLIP-2 (ViT + Q-Former + Flan-T5-style encoder-decoder) built from config.

The encoder-decoder layout the open Med-PaLM M reproduction uses (BLIP-2 with Flan-T5): the
processor puts `num_query_tokens` image tokens before the prompt, the Q-Former's query
outputs replace them in the T5 encoder input, and the target is the decoder's label sequence.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from generalist.catalog.task import IMAGE_TOKEN
from generalist.model.config import TinyModelConfig
from generalist.model.tiny_parts import (
    image_processor_class,
    intermediate_size,
    set_special_token_ids,
    vision_tower_config,
)

if TYPE_CHECKING:
    from transformers import Blip2Config, Blip2Processor, PreTrainedTokenizerBase


def make_blip2_processor(
    cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerBase
) -> Blip2Processor:
    """A Blip2Processor with a BlipImageProcessor sized to cfg.image_size."""
    from transformers import Blip2Processor

    size = {"height": cfg.image_size, "width": cfg.image_size}
    return Blip2Processor(
        image_processor=image_processor_class("BlipImageProcessor")(size=size),
        tokenizer=tokenizer,
        num_query_tokens=cfg.num_query_tokens,
    )


def tiny_blip2_config(cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerBase) -> Blip2Config:
    """Blip2Config from vision, Q-Former and T5 configs sized by `cfg`."""
    from transformers import Blip2Config, Blip2QFormerConfig, Blip2VisionConfig, T5Config

    inter = intermediate_size(cfg)
    vision = vision_tower_config(Blip2VisionConfig, cfg)
    qformer = Blip2QFormerConfig(
        hidden_size=cfg.hidden_size,
        num_hidden_layers=1,
        num_attention_heads=cfg.heads,
        intermediate_size=inter,
        encoder_hidden_size=cfg.hidden_size,
        vocab_size=len(tokenizer),
    )
    text = T5Config(
        vocab_size=len(tokenizer),
        d_model=cfg.hidden_size,
        d_kv=cfg.hidden_size // cfg.heads,
        d_ff=inter,
        num_layers=cfg.text_layers,
        num_decoder_layers=cfg.text_layers,
        num_heads=cfg.heads,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    config = Blip2Config(
        vision_config=vision,
        qformer_config=qformer,
        text_config=text,
        num_query_tokens=cfg.num_query_tokens,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
    )
    set_special_token_ids(config, tokenizer, "pad", "eos")
    config.decoder_start_token_id = tokenizer.pad_token_id  # T5 starts decoding from <pad>
    return config
