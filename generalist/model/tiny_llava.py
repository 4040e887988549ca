"""A tiny LLaVA built from config: a CLIP vision tower and a Llama LM, the LlavaProcessor over the
locally trained tokenizer (its CLIPImageProcessor sized to the model, so "<image>" expands into
(image_size / patch_size)^2 tokens exactly as the processor says), and the tower's optional start
from a pretrained one (`model.tiny.vision_init`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from generalist.catalog.task import IMAGE_TOKEN
from generalist.errors import ConfigError
from generalist.model.config import TinyModelConfig
from generalist.model.tiny_parts import (
    intermediate_size,
    make_image_processor,
    set_special_token_ids,
    vision_tower_config,
)

if TYPE_CHECKING:
    from transformers import (
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerBase,
    )


def make_processor(cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerBase) -> LlavaProcessor:
    """A LlavaProcessor: CLIPImageProcessor resized to image_size, one CLS token dropped."""
    from transformers import LlavaProcessor

    return LlavaProcessor(
        image_processor=make_image_processor(cfg),
        tokenizer=tokenizer,
        patch_size=cfg.patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        image_token=IMAGE_TOKEN,
    )


def tiny_llava_config(cfg: TinyModelConfig, tokenizer: PreTrainedTokenizerBase) -> LlavaConfig:
    """LlavaConfig from a CLIPVisionConfig and a LlamaConfig sized by `cfg`."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    vision = vision_tower_config(CLIPVisionConfig, cfg)
    text = LlamaConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=intermediate_size(cfg),
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.heads,
        vocab_size=len(tokenizer),
        max_position_embeddings=cfg.max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        projector_hidden_act="gelu",
    )
    return set_special_token_ids(config, tokenizer, "pad", "eos", "bos")


def load_vision_init(model: LlavaForConditionalGeneration, cfg: TinyModelConfig) -> None:
    """Start a tiny LLaVA's vision tower from a CLIPVisionModel saved at cfg.vision_init (e.g. by
    `generalist pretrain-vision`); ConfigError naming the key when it is missing or mis-sized."""
    from transformers import CLIPVisionModel

    key = "model.tiny.vision_init"
    path = Path(cfg.vision_init)
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"{key}: no saved vision tower at {str(path)!r} (no config.json); write one with "
            "`generalist pretrain-vision` or drop the key"
        )
    tower = CLIPVisionModel.from_pretrained(path)
    target = model.model.vision_tower
    theirs, ours = tower.config, target.config
    sizes = ("hidden_size", "num_hidden_layers", "image_size", "patch_size", "intermediate_size")
    wrong = [
        f"{n} {getattr(theirs, n)} vs {getattr(ours, n)}"
        for n in sizes
        if getattr(theirs, n) != getattr(ours, n)
    ]
    if wrong:
        raise ConfigError(
            f"{key}: the tower at {str(path)!r} does not fit model.tiny ({'; '.join(wrong)})"
        )
    target.load_state_dict(tower.state_dict())
