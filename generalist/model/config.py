"""Typed model and LoRA configs: the training config nests them under `model:` and `lora:`.

Strict and frozen (generalist.config_base); `ModelConfig.parse(data)` / `LoraSettings.parse(data)`
turn pydantic's errors into one ConfigError naming the key. See generalist.model for what they
build.
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from generalist.config_base import StrictConfig

Family = Literal["auto", "llava", "blip2", "causal_lm", "composed"]
AttnImplementation = Literal["sdpa", "flash_attention_2", "eager"]
PromptFormat = Literal["raw", "chat"]


class TinyModelConfig(StrictConfig):
    """A tiny LLaVA (CLIP + Llama) or BLIP-2 (ViT + Q-Former + T5) built from scratch, with a
    tokenizer trained locally.

    `vocab_size` caps the trained tokenizer's vocabulary; the model uses the real size.
    `tokenizer_corpus`: a UTF-8 text file, one text per line; None means the caller passes
    `texts_for_tokenizer` (the trainer draws prompts and targets from the mixture).
    """

    config_key: ClassVar[str] = "model.tiny"

    vision_layers: int = Field(2, ge=1, description="vision transformer layers")
    text_layers: int = Field(2, ge=1, description="language model layers")
    hidden_size: int = Field(64, ge=8, description="width of both (a multiple of heads)")
    heads: int = Field(4, ge=1, description="attention heads")
    intermediate_size: int | None = Field(None, ge=8, description="MLP width; default 4 x hidden")
    image_size: int = Field(64, ge=8, description="input image side in pixels")
    patch_size: int = Field(16, ge=2, description="vision patch side (image_size is a multiple)")
    vocab_size: int = Field(4000, ge=16, description="cap of the locally trained vocabulary")
    tokenizer: Literal["word", "bpe"] = Field("word", description="tokenizer trained locally")
    tokenizer_corpus: str | None = Field(
        None, description="text file to train it on (one text a line); default the mixture's"
    )
    max_position_embeddings: int = Field(2048, ge=16, description="longest sequence")
    # same weights on every rank: ZeRO-3 partitions each rank's own copy
    seed: int = Field(0, description="seed of the weights (the same on every rank)")
    architecture: Literal["llava", "blip2"] = Field(
        "llava", description="llava: CLIP + Llama; blip2: ViT + Q-Former + T5 encoder-decoder"
    )
    num_query_tokens: int = Field(8, ge=1, description="blip2 only: image tokens per image")
    vision_init: str | None = Field(
        None,
        description="llava only: a CLIPVisionModel dir (`generalist pretrain-vision`) that "
        "starts the vision tower, as real LLaVA starts from a pretrained CLIP",
    )

    @model_validator(mode="after")
    def _shapes(self) -> TinyModelConfig:
        if self.hidden_size % self.heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by heads")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size")
        if self.vision_init is not None and self.architecture != "llava":
            raise ValueError("vision_init starts a LLaVA (CLIP) vision tower; drop it for blip2")
        return self


Part = Literal["vision_tower", "projector", "language_model"]


class FreezeConfig(StrictConfig):
    """Which parts keep their weights (generalist.model.parts names each family's modules).
    With LoRA the language model's own weights are always frozen (LoRA trains beside them)."""

    config_key: ClassVar[str] = "model.freeze"

    vision_tower: bool = Field(True, description="keep the vision tower frozen")
    projector: bool = Field(False, description="keep the projector (connector, merger) frozen")
    language_model: bool = Field(
        False, description="keep the language model frozen (lora off: projector-only training)"
    )


class ModelConfig(StrictConfig):
    """Which model to train. Exactly one of `name_or_path`, `tiny`, or composed parts.

    family: "auto" picks from the checkpoint's config (vision config -> image-text-to-text,
    else causal LM); "composed" joins `vision_encoder` and `language_model` (paths or hub ids)
    with a new projector. freeze_vision keeps the vision tower frozen (default);
    freeze_language_model (with lora.enabled false) trains the projector only, LLaVA stage 1.
    """

    config_key: ClassVar[str] = "model"

    name_or_path: str | None = Field(
        None, description="a hub id, a Hugging Face model dir or a generalist model dir"
    )
    tiny: TinyModelConfig | None = Field(
        None, description="a tiny model built from config (tests, the demo)"
    )
    family: Family = Field(
        "auto",
        description="auto: from the checkpoint's config; composed: vision_encoder + "
        "language_model joined by a new projector",
    )
    vision_encoder: str | None = Field(None, description="family composed: the vision encoder")
    language_model: str | None = Field(None, description="family composed: the causal LM")
    projector_hidden_act: str = Field("gelu", description="family composed: projector activation")
    freeze: FreezeConfig | None = Field(
        None,
        description="frozen parts {vision_tower, projector, language_model}; default: the tower "
        "(freeze_vision / freeze_language_model are its older spellings)",
    )
    freeze_vision: bool = Field(True, description="older spelling of freeze.vision_tower")
    freeze_language_model: bool = Field(
        False, description="older spelling of freeze.language_model (LLaVA stage 1, lora off)"
    )
    prompt_format: PromptFormat = Field(
        "raw",
        description="raw: the Med-PaLM M prompt text; chat: the processor's or tokenizer's own "
        "chat template (instruction as system turn, target as the assistant turn); saved with "
        "the model dir, so evaluation uses the format the run trained with",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype the weights are loaded in"
    )
    gradient_checkpointing: bool = Field(
        False,
        description="recompute activations: less memory (non-reentrant; works with a frozen "
        "tower and LoRA)",
    )
    # image size caps (generalist.batching.image_caps), applied before the processor
    max_pixels: int | None = Field(
        None,
        ge=1,
        description="downscale (aspect kept) any image with more pixels than this before the "
        "processor, so a high-resolution source cannot blow up a batch; none: no cap",
    )
    max_image_pixels: int = Field(
        89_478_485,  # PIL's own default limit (Image.MAX_IMAGE_PIXELS)
        ge=1,
        description="the largest image accepted (width x height, read from its header before "
        "decoding; default PIL's): a larger one, e.g. a decompression bomb, is a bad sample: "
        "one line naming shard and key, or dropped and counted with skip_bad",
    )
    max_tiles: int | None = Field(
        None,
        ge=1,
        description="at most this many tiles per image, where the family tiles its images "
        "(Llama 3.2 Vision, Idefics3 / SmolVLM, LLaVA-NeXT / OneVision); an error for a family "
        "that does not tile",
    )
    # GPU settings (generalist.model.kernels checks and applies them; errors name the key)
    attn_implementation: AttnImplementation = Field(
        "sdpa", description="attention kernel: sdpa, flash_attention_2 (CUDA, flash-attn) or eager"
    )
    liger_kernel: bool = Field(
        False,
        description="Liger's Triton kernels (RMSNorm, RoPE, SwiGLU) where the family has "
        "them; CUDA and liger-kernel only",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        composed = self.family == "composed"
        given = [
            n
            for n, v in (("name_or_path", self.name_or_path), ("tiny", self.tiny))
            if v is not None
        ]
        if composed:
            if given or not (self.vision_encoder and self.language_model):
                raise ValueError(
                    "family 'composed' needs model.vision_encoder and model.language_model "
                    "(and neither name_or_path nor tiny)"
                )
        elif len(given) != 1:
            raise ValueError("give exactly one of model.name_or_path or model.tiny")
        elif self.vision_encoder or self.language_model:
            raise ValueError("model.vision_encoder/language_model need family: composed")
        if self.freeze is not None and (not self.freeze_vision or self.freeze_language_model):
            raise ValueError(
                "give model.freeze or the older model.freeze_vision / freeze_language_model, "
                "not both"
            )
        if self.tiny is not None and self.family not in ("auto", self.tiny.architecture):
            raise ValueError(
                f"model.tiny.architecture is {self.tiny.architecture!r}; family "
                f"{self.family!r} does not fit (use auto)"
            )
        return self

    def frozen(self) -> FreezeConfig:
        """The frozen parts: `freeze`, else the older two keys."""
        if self.freeze is not None:
            return self.freeze
        return FreezeConfig(
            vision_tower=self.freeze_vision, language_model=self.freeze_language_model
        )


class LoraSettings(StrictConfig):
    """LoRA through peft. `enabled: false` trains the (unfrozen) base model in full.

    target_modules are module-name suffixes, matched inside `target_parts` only (default the
    language model, never the vision tower; language_model_only false: anywhere).
    modules_to_save are trained in full and saved with the adapter: module names, or part names
    ("projector": LLaVA's multi_modal_projector, Qwen's visual.merger, Idefics3's connector).
    """

    config_key: ClassVar[str] = "lora"

    enabled: bool = Field(True, description="false: train the (unfrozen) model in full")
    r: int = Field(8, ge=1, description="LoRA rank")
    alpha: float = Field(16, gt=0, description="LoRA scaling (alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="module-name suffixes that get LoRA",
    )
    target_parts: list[Part] = Field(
        default_factory=lambda: ["language_model"],
        description="parts whose target_modules get LoRA (vision_tower, projector, language_model)",
    )
    modules_to_save: list[str] = Field(
        default_factory=lambda: ["projector"],
        description="modules or parts (projector) trained in full and saved with the adapter",
    )
    language_model_only: bool = Field(
        True, description="false: target_modules match in every part (ignores target_parts)"
    )

    @model_validator(mode="after")
    def _targets(self) -> LoraSettings:
        if self.enabled and not self.target_modules:
            raise ValueError("lora.target_modules is empty; name modules or set enabled: false")
        return self
