"""`build_model`: the configured model as a ModelBundle, its trainable parts set and LoRA applied.

A model is one of
- `name_or_path`: a hub id or local directory, loaded through transformers' auto classes
  (generalist.model.pretrained), or a model dir written by `save_model_dir` (e.g. after a full
  warm-up: training continues from its weights; generalist.model.model_dir);
- `tiny`: a tiny LLaVA or BLIP-2 built from config, tokenizer trained locally (tests, demo);
- `family: composed`: a pretrained vision encoder + a pretrained LM joined by a new projector.
What differs between VLM families in a batch lives in generalist.batching.token_layout.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from generalist.catalog.task import IMAGE_TOKEN
from generalist.errors import ConfigError
from generalist.model.bundle import ModelBundle
from generalist.model.config import LoraSettings, ModelConfig, TinyModelConfig
from generalist.model.kernels import apply_kernels
from generalist.model.lora import apply_lora, configure_trainable
from generalist.model.model_dir import load_source, to_dtype
from generalist.model.tiny_blip2 import make_blip2_processor, tiny_blip2_config
from generalist.model.tiny_llava import load_vision_init, make_processor, tiny_llava_config
from generalist.model.tiny_parts import set_special_token_ids, train_tokenizer
from generalist.model.torchvision_guard import torchvision_usable


def build_model(
    model_cfg: ModelConfig,
    lora_cfg: LoraSettings | None = None,
    texts_for_tokenizer: Iterable[str] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> ModelBundle:
    """Build the model, its processor and tokenizer, freeze what is frozen and apply LoRA.

    texts_for_tokenizer: training texts for a tiny model's tokenizer (when no corpus file).
    work_dir: where a tiny model's trained processor is kept (`<work_dir>/processor`); an
    existing one is reused, so a resumed run keeps the same tokenizer.
    Raises ConfigError for a model that cannot be found or built, before any training.
    """
    torchvision_usable()  # a broken torchvision is hidden before transformers imports it
    import torch

    lora_cfg = lora_cfg or LoraSettings()
    if model_cfg.frozen().language_model and lora_cfg.enabled:
        raise ConfigError(
            "model.freeze.language_model (freeze_language_model) trains the projector only: "
            "set lora.enabled: false "
            "(with LoRA on, the language model would still be adapted)"
        )
    if model_cfg.tiny is not None:
        model, processor, family = build_tiny(model_cfg.tiny, texts_for_tokenizer, work_dir)
    else:
        model, processor, family = load_source(model_cfg)
    model = to_dtype(model, model_cfg.dtype)
    model = apply_kernels(model, model_cfg)  # attn_implementation, liger_kernel
    tokenizer = getattr(processor, "tokenizer", processor)
    image_token = getattr(processor, "image_token", None) if family != "causal_lm" else None
    image_token = getattr(image_token, "content", image_token)  # BLIP-2 keeps an AddedToken
    if family != "causal_lm" and image_token is None:
        image_token = IMAGE_TOKEN
    configure_trainable(model, model_cfg, lora_cfg, family)
    with torch.random.fork_rng(devices=[]):  # LoRA A init: the same on every rank and run
        torch.manual_seed(model_cfg.tiny.seed if model_cfg.tiny is not None else 0)
        model = apply_lora(model, lora_cfg, family, model_cfg)
    if model_cfg.gradient_checkpointing:
        base = getattr(model, "get_base_model", lambda: model)()
        kwargs = {"use_reentrant": False}  # non-reentrant: works with frozen inputs and ZeRO-3
        if hasattr(base, "activation_checkpointing_enable"):  # transformers >= 5
            base.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        if hasattr(base, "enable_input_require_grads"):
            base.enable_input_require_grads()  # frozen embeddings still pass grads to LoRA
    return ModelBundle(model, processor, tokenizer, image_token, family, model_cfg, lora_cfg)


def build_tiny(
    cfg: TinyModelConfig,
    texts: Iterable[str] | None = None,
    work_dir: str | os.PathLike[str] | None = None,
) -> tuple[Any, Any, str]:
    """(model, processor, family) with family = cfg.architecture ("llava" or "blip2"); weights
    seeded by cfg.seed, identical on every rank.

    With work_dir, the processor is saved at <work_dir>/processor and reused when present.
    """
    import torch
    from transformers import (
        AutoProcessor,
        Blip2ForConditionalGeneration,
        LlavaForConditionalGeneration,
    )

    saved = Path(work_dir) / "processor" if work_dir is not None else None
    blip2 = cfg.architecture == "blip2"
    if saved is not None and (saved / "processor_config.json").is_file():
        processor = AutoProcessor.from_pretrained(saved)
    else:
        tokenizer = train_tokenizer(cfg, texts, image_token_attr=not blip2)
        make = make_blip2_processor if blip2 else make_processor
        processor = make(cfg, tokenizer)
        if saved is not None:
            processor.save_pretrained(saved)
    tok = processor.tokenizer
    if blip2:
        config, cls = tiny_blip2_config(cfg, tok), Blip2ForConditionalGeneration
    else:
        config, cls = tiny_llava_config(cfg, tok), LlavaForConditionalGeneration
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = cls(config)
    if cfg.vision_init is not None:
        load_vision_init(model, cfg)
    set_special_token_ids(model.generation_config, tok, "pad", "eos")
    if blip2:
        model.generation_config.decoder_start_token_id = tok.pad_token_id
    else:
        model.generation_config.bos_token_id = tok.bos_token_id
    return model, processor, cfg.architecture
