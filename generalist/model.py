"""Models: `build_model` -> ModelBundle, and the on-disk model layout (save/load).

The training config nests `ModelConfig` under `model:` and `LoraSettings` under `lora:`
(generalist.model_config, re-exported here). A model is one of
- `name_or_path`: a hub id or local directory, loaded through transformers' auto classes
  (AutoModelForImageTextToText for LLaVA / PaliGemma / Qwen2-VL / BLIP-2, AutoModelForCausalLM
  for text-only LMs) with AutoProcessor / AutoTokenizer; or a model dir written by
  save_model_dir (e.g. after a full warm-up: training continues from its weights). Tested with
  tiny LLaVA, BLIP-2, PaliGemma and Qwen2-VL checkpoints; generalist.token_layout holds what
  differs between them (image markers, PaliGemma's prefix-LM token_type_ids, Qwen2-VL's
  mm_token_type_ids and patch grids). Without a usable torchvision, transformers cannot build
  Qwen2-VL's processor: generalist.mrope_processor stands in for it;
- `tiny`: a tiny LLaVA or BLIP-2 built from config, tokenizer trained locally (tests, demo);
- `family: composed`: a pretrained vision encoder + a pretrained LM joined by a new projector
  (LLaVA-style, via LlavaConfig from the two configs), from local paths or hub ids.

Saved model layout (a "model dir"; the training checkpoint puts one at `<ckpt>/model/`, and
`generalist export` / `generalist evaluate` read it):

    <dir>/model.json      {"format_version": 1, "model": ModelConfig, "lora": LoraSettings,
                           "family", "image_token", "base": "saved" | "reference"}
    <dir>/processor/      processor (or tokenizer for causal LMs), save_pretrained
    <dir>/base/           base weights (save_pretrained, safetensors) unless "reference":
                           a pretrained base that was not trained is re-loaded from name_or_path
    <dir>/adapter/        the peft LoRA adapter (+ modules_to_save, e.g. the projector)

`save_model_dir(bundle, dir, state_dict=None)` writes it; pass `state_dict` gathered from the
engine under ZeRO-3 (rank 0). `load_model_dir(dir)` rebuilds the bundle.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generalist.atomic_dir import atomic_dir
from generalist.errors import ConfigError
from generalist.model_config import (  # re-exported: the configs live beside the builder
    DTYPES,
    Family,
    LoraSettings,
    ModelConfig,
    TinyModelConfig,
    parse_lora_settings,
    parse_model_config,
)
from generalist.task import IMAGE_TOKEN

MODEL_DIR_VERSION = 1


@dataclass
class ModelBundle:
    """A built model and everything needed to feed it.

    model: the trainable module (a peft PeftModel when LoRA is enabled).
    processor: the HF processor (LlavaProcessor etc.); for causal LMs the tokenizer itself.
    image_token: the processor's image token string (None for text-only models).
    family: "llava" | "blip2" | "causal_lm" | "image_text_to_text" (other auto VLMs such as
        PaliGemma and Qwen2-VL; the collator adapts to their model_type).
    """

    model: Any
    processor: Any
    tokenizer: Any
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
    def base_model(self) -> Any:
        """The underlying transformers model (unwrapped from peft)."""
        from generalist.lora import unwrap

        return unwrap(self.model)


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
    import torch

    from generalist.lora import apply_lora, configure_trainable

    lora_cfg = lora_cfg or LoraSettings()
    if model_cfg.freeze_language_model and lora_cfg.enabled:
        raise ConfigError(
            "model.freeze_language_model trains the projector only: set lora.enabled: false "
            "(with LoRA on, the language model would still be adapted)"
        )
    if model_cfg.tiny is not None:
        from generalist.tiny_model import build_tiny

        model, processor, family = build_tiny(model_cfg.tiny, texts_for_tokenizer, work_dir)
    else:
        from generalist.pretrained import load_pretrained

        model, processor, family = load_pretrained(model_cfg)
    model = _to_dtype(model, model_cfg.dtype)
    tokenizer = getattr(processor, "tokenizer", processor)
    image_token = getattr(processor, "image_token", None) if family != "causal_lm" else None
    image_token = getattr(image_token, "content", image_token)  # BLIP-2 keeps an AddedToken
    if family != "causal_lm" and image_token is None:
        image_token = IMAGE_TOKEN
    configure_trainable(model, model_cfg, lora_cfg, family)
    with torch.random.fork_rng(devices=[]):  # LoRA A init: the same on every rank and run
        torch.manual_seed(model_cfg.tiny.seed if model_cfg.tiny is not None else 0)
        model = apply_lora(model, lora_cfg, family)
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


def _to_dtype(model: Any, dtype: str) -> Any:
    import torch

    return model.to(getattr(torch, dtype))


def save_model_dir(
    bundle: ModelBundle,
    out_dir: str | os.PathLike[str],
    state_dict: Mapping[str, Any] | None = None,
) -> Path:
    """Write the model dir (layout in the module docstring) atomically: tmp dir, then rename.

    state_dict: the full (gathered) state dict of `bundle.model` when the local parameters are
    partitioned (ZeRO-3); None uses the model's own. Refuses an all-zero LoRA adapter.
    """
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        _write_model_dir(bundle, tmp, out, state_dict)
    return out


def _write_model_dir(
    bundle: ModelBundle, tmp: Path, out: Path, state_dict: Mapping[str, Any] | None
) -> None:
    from generalist.lora import base_state_dict, base_was_trained, save_adapter

    if bundle.lora.enabled:
        save_adapter(bundle.model, tmp / "adapter", state_dict, where=f"model dir {out}")
    keep_base = bundle.config.name_or_path is None or base_was_trained(bundle)
    if keep_base:
        sd = base_state_dict(bundle.model, state_dict)
        bundle.base_model.save_pretrained(tmp / "base", state_dict=sd)
    bundle.processor.save_pretrained(tmp / "processor")
    meta = {
        "format_version": MODEL_DIR_VERSION,
        "model": bundle.config.model_dump(),
        "lora": bundle.lora.model_dump(),
        "family": bundle.family,
        "image_token": bundle.image_token,
        "base": "saved" if keep_base else "reference",
    }
    name = bundle.config.name_or_path
    if not keep_base and name is not None and Path(name).exists():
        # a local base is found again from any working directory
        meta["model"]["name_or_path"] = str(Path(name).resolve())
    (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")


def find_model_dir(path: str | os.PathLike[str]) -> Path:
    """The model dir at `path` or at `path/model` (a training checkpoint); ConfigError if none."""
    p = Path(path)
    for cand in (p, p / "model"):
        if (cand / "model.json").is_file():
            return cand
    raise ConfigError(
        f"{p}: no model.json in it or in {p / 'model'}; pass a checkpoint directory written by "
        "`generalist train` (or its model/ subdirectory)"
    )


def load_model_dir(path: str | os.PathLike[str], trainable: bool = False) -> ModelBundle:
    """Rebuild a ModelBundle from a model dir (or a checkpoint holding `model/`)."""
    from generalist.pretrained import load_auto_model, load_processor

    d = find_model_dir(path)
    meta = json.loads((d / "model.json").read_text())
    if meta.get("format_version") != MODEL_DIR_VERSION:
        raise ConfigError(f"{d / 'model.json'}: format_version {meta.get('format_version')!r}")
    cfg = ModelConfig.model_validate(meta["model"])
    lora = LoraSettings.model_validate(meta["lora"])
    family = meta["family"]
    if meta["base"] == "saved":
        model = load_auto_model(str(d / "base"), family)
    else:  # an untrained pretrained base: a hub id, a local HF dir or another model dir
        from generalist.pretrained import load_pretrained

        model = load_pretrained(cfg)[0]
    model = _to_dtype(model, cfg.dtype)
    processor = load_processor(str(d / "processor"), family)
    if lora.enabled:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(d / "adapter"), is_trainable=trainable)
    if not trainable:
        model.eval()
    tokenizer = getattr(processor, "tokenizer", processor)
    return ModelBundle(model, processor, tokenizer, meta["image_token"], family, cfg, lora)


__all__ = [
    "DTYPES",
    "Family",
    "LoraSettings",
    "ModelBundle",
    "ModelConfig",
    "TinyModelConfig",
    "build_model",
    "find_model_dir",
    "load_model_dir",
    "parse_lora_settings",
    "parse_model_config",
    "save_model_dir",
]
