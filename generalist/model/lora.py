"""LoRA through peft: which parameters train, wrapping, and saving an adapter that is not empty.

Trainable set:
- lora.enabled: LoRA on `target_modules` inside the language model only (never the vision
  tower), plus `modules_to_save` (the projector) trained in full; everything else frozen.
  `model.freeze_vision: false` additionally trains the vision tower in full.
- lora.enabled false: the whole model trains, minus the vision tower (freeze_vision) and minus
  the language model (freeze_language_model: projector-only, LLaVA stage 1).

Per family: LLaVA and PaliGemma train `multi_modal_projector` (modules_to_save), BLIP-2 its
`language_projection`; Qwen2-VL's projector (the patch merger) lives inside its vision tower
`visual` and stays frozen with it (`model.freeze_vision: false` trains both).

`save_adapter` refuses to write an adapter whose LoRA B weights are all zero (never trained, or
under ZeRO-3 saved without gathering): other tools silently save such empty adapters.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from generalist.errors import ConfigError, GeneralistError
from generalist.model.config import LoraSettings, ModelConfig

# Module-name fragments of the vision tower / language model across HF VLM families.
VISION_PARTS = ("vision_tower", "vision_model", "visual", "vision_encoder")
LANGUAGE_PARTS = ("language_model", "text_model", "lm_head")  # text_model: Idefics3, SmolVLM
PROJECTOR_BY_FAMILY = {"blip2": ["language_projection"]}
DEFAULT_MODULES_TO_SAVE = ["multi_modal_projector"]
PROJECTORS = ("multi_modal_projector", "connector")  # connector: Idefics3, SmolVLM


def unwrap(model: Any) -> Any:
    """The transformers model under a peft wrapper (or the model itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def _has_part(name: str, parts: tuple[str, ...]) -> bool:
    return any(p in name.split(".") for p in parts)


def _set_grad(model: Any, parts: tuple[str, ...], flag: bool) -> None:
    for name, param in model.named_parameters():
        if _has_part(name, parts):
            param.requires_grad_(flag)


def configure_trainable(
    model: Any, model_cfg: ModelConfig, lora_cfg: LoraSettings, family: str
) -> None:
    """Set requires_grad for full training (LoRA's own freezing happens in apply_lora)."""
    model.requires_grad_(True)
    if model_cfg.freeze_vision:
        _set_grad(model, VISION_PARTS, False)
    if model_cfg.freeze_language_model:
        if family == "causal_lm":
            raise ConfigError("model.freeze_language_model would freeze a causal LM entirely")
        _set_grad(model, (*LANGUAGE_PARTS, "embed_tokens"), False)


def _modules_to_save(model: Any, lora_cfg: LoraSettings, family: str) -> list[str]:
    wanted = list(lora_cfg.modules_to_save)
    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    if wanted == DEFAULT_MODULES_TO_SAVE:
        wanted = PROJECTOR_BY_FAMILY.get(family, [p for p in PROJECTORS if p in names][:1])
    missing = [m for m in wanted if m not in names]
    if missing and lora_cfg.modules_to_save != DEFAULT_MODULES_TO_SAVE:
        raise ConfigError(f"lora.modules_to_save: no module named {missing} in this {family} model")
    return [m for m in wanted if m in names]  # a causal LM has no projector: nothing to save


DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
T5_TARGETS = ["q", "k", "v", "o"]  # T5 / Flan-T5 attention projections (BLIP-2 + Flan-T5)


def _targets(model: Any, lora_cfg: LoraSettings) -> list[str]:
    """The configured targets; the default q/k/v/o_proj becomes q/k/v/o for a T5-style LM."""
    targets = list(lora_cfg.target_modules)
    if targets == DEFAULT_TARGETS and not any(
        n.endswith(".q_proj") for n, _ in model.named_modules()
    ):
        return T5_TARGETS
    return targets


def target_pattern(model: Any, lora_cfg: LoraSettings, family: str) -> str | list[str]:
    """peft target_modules: a regex limited to the language model, or the plain suffix list."""
    targets = _targets(model, lora_cfg)
    if family == "causal_lm" or not lora_cfg.language_model_only:
        return targets
    names = "|".join(re.escape(t) for t in targets)
    return rf".*(language_model|text_model).*\.({names})"


def apply_lora(model: Any, lora_cfg: LoraSettings, family: str) -> Any:
    """Wrap `model` with a peft LoRA adapter per `lora_cfg`; returns the model unchanged if off."""
    if not lora_cfg.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    trained_vision = {
        n for n, p in model.named_parameters() if p.requires_grad and _has_part(n, VISION_PARTS)
    }
    config = LoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=target_pattern(model, lora_cfg, family),
        modules_to_save=_modules_to_save(model, lora_cfg, family) or None,
        task_type="CAUSAL_LM" if family == "causal_lm" else None,
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as err:
        raise ConfigError(
            f"lora.target_modules {lora_cfg.target_modules}: {err}".splitlines()[0]
        ) from None
    # freeze_vision false with LoRA: the vision tower also trains in full (saved in base/)
    for name, param in unwrap(peft_model).named_parameters():
        if name in trained_vision:
            param.requires_grad_(True)
    return peft_model


def trainable_parameter_names(model: Any) -> list[str]:
    """Names of parameters that require grad (for logs and tests)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def is_adapter_key(name: str) -> bool:
    """True for the adapter's own parameters (LoRA A/B and modules_to_save copies)."""
    return "lora_" in name or ".modules_to_save." in name


def base_state_dict(model: Any, state_dict: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The plain transformers state dict of the base model, from a (peft) model's state dict.

    LoRA tensors are dropped, `base_layer.` unwrapped, and modules_to_save take their trained
    copy; so base/ + adapter/ reload to the same model.
    """
    sd = dict(state_dict if state_dict is not None else model.state_dict())
    if unwrap(model) is model:
        return sd
    out: dict[str, Any] = {}
    trained: dict[str, Any] = {}
    for key, value in sd.items():
        k = key.removeprefix("base_model.model.")
        if "lora_" in k or ".original_module." in k:
            continue
        k = k.replace(".base_layer.", ".")
        m = re.match(r"(.*)\.modules_to_save\.[^.]+\.(.*)", k)
        if m:
            trained[f"{m.group(1)}.{m.group(2)}"] = value
        else:
            out[k] = value
    out.update(trained)
    return out


def adapter_state_dict(model: Any, state_dict: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The adapter's tensors (LoRA A/B and modules_to_save) via peft."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model, state_dict=dict(state_dict) if state_dict else None)


def check_adapter(adapter_sd: Mapping[str, Any], where: str = "adapter") -> None:
    """Raise unless the adapter has LoRA B weights and not all of them are zero."""
    b = {k: v for k, v in adapter_sd.items() if "lora_B" in k}
    if not b:
        raise GeneralistError(f"{where}: no LoRA B weights to save; is this a peft LoRA model?")
    empty = [k for k, v in b.items() if v.numel() == 0]
    if empty:
        raise GeneralistError(
            f"{where}: LoRA weight {empty[0]} has no elements: under ZeRO-3 gather the "
            "parameters (engine._zero3_consolidated_16bit_state_dict()) and pass state_dict"
        )
    if all(not bool(v.detach().float().abs().sum() > 0) for v in b.values()):
        raise GeneralistError(
            f"{where}: refusing to save an empty adapter: all {len(b)} LoRA B weights are zero, "
            "so it equals the base model; train at least one optimizer step first (check the "
            "learning rate and that the LoRA parameters reach the optimizer)"
        )


def save_adapter(
    model: Any,
    path: str | os.PathLike[str],
    state_dict: Mapping[str, Any] | None = None,
    where: str | None = None,
) -> Path:
    """Save the peft adapter at `path` after check_adapter; state_dict: a gathered full one."""
    out = Path(path)
    check_adapter(adapter_state_dict(model, state_dict), where=where or f"adapter {out}")
    model.save_pretrained(str(out), state_dict=dict(state_dict) if state_dict else None)
    return out
