"""ModelBundle: a built model and everything needed to feed it (processor, tokenizer, image
token, family, the configs it was built from)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from generalist.model.config import LoraSettings, ModelConfig
from generalist.model.lora import unwrap

if TYPE_CHECKING:
    from peft import PeftModel
    from transformers import PreTrainedModel, PreTrainedTokenizerBase, ProcessorMixin

    from generalist.model.qwen2_vl_processor import MRopeProcessor


@dataclass
class ModelBundle:
    """A built model and everything needed to feed it.

    model: the trainable module (a peft PeftModel when LoRA is enabled).
    processor: the HF processor (LlavaProcessor etc.); for causal LMs the tokenizer itself.
    image_token: the processor's image token string (None for text-only models).
    family: "llava" | "blip2" | "causal_lm" | "image_text_to_text" (other auto VLMs such as
        PaliGemma, Qwen2-VL / Qwen2.5-VL / Qwen3-VL, Gemma 3 and Mllama; the collator adapts
        to their model_type).
    """

    model: PreTrainedModel | PeftModel
    processor: ProcessorMixin | PreTrainedTokenizerBase | MRopeProcessor
    tokenizer: PreTrainedTokenizerBase
    image_token: str | None
    family: str
    config: ModelConfig
    lora: LoraSettings

    @property
    def image_token_id(self) -> int | None:
        if self.image_token is None:
            return None
        return int(self.tokenizer.convert_tokens_to_ids(self.image_token))

    @property
    def is_encoder_decoder(self) -> bool:
        """True for BLIP-2 with a T5-style LM: labels are the decoder sequence, and generate()
        returns only new tokens (decoder-only models return prompt + new tokens)."""
        config = self.base_model.config
        text = getattr(config, "text_config", config)
        return bool(getattr(text, "is_encoder_decoder", False))

    @property
    def base_model(self) -> PreTrainedModel:
        """The underlying transformers model (unwrapped from peft)."""
        return unwrap(self.model)

    def merged_model(self) -> PreTrainedModel:
        """The transformers model with the LoRA adapter merged in (peft merge_and_unload)."""
        return self.model.merge_and_unload() if self.lora.enabled else self.base_model
