"""LoRA through peft: which parameters train, wrapping, and saving an adapter that is not empty.

Trainable set, by part (generalist.model.parts: vision tower, projector, language model; the
same names for every family):
- lora.enabled: LoRA on `target_modules` inside `lora.target_parts` (default the language model,
  never the vision tower), plus `modules_to_save` trained in full and saved with the adapter
  (default "projector": LLaVA's multi_modal_projector, BLIP-2's Q-Former and projection, Qwen's
  patch merger, Idefics3's connector); everything else frozen. A part that `model.freeze`
  leaves unfrozen and LoRA does not target (the vision tower with freeze.vision_tower false)
  trains in full too (saved in base/).
- lora.enabled false: every part trains that `model.freeze` does not freeze (default: all but
  the vision tower; freeze.language_model true: projector-only, LLaVA stage 1).

`save_adapter` refuses to write an adapter whose LoRA B weights are all zero (never trained, or
under ZeRO-3 saved without gathering): other tools silently save such empty adapters.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generalist.errors import ConfigError, GeneralistError
from generalist.model.config import LoraSettings, ModelConfig
from generalist.model.parts import PARTS, part_of, part_roots, parts_of

if TYPE_CHECKING:
    from peft import PeftModel
    from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def frozen_parts(model_cfg: ModelConfig) -> set[str]:
    """The part names model.freeze (or its older keys) keeps frozen."""
    frozen = model_cfg.frozen()
    return {p for p in PARTS if getattr(frozen, p)}


def configure_trainable(
    model: nn.Module, model_cfg: ModelConfig, lora_cfg: LoraSettings, family: str
) -> None:
    """Set requires_grad per part for full training (LoRA's own freezing: apply_lora)."""
    frozen = frozen_parts(model_cfg)
    if family == "causal_lm" and "language_model" in frozen:
        raise ConfigError("model.freeze.language_model would freeze a causal LM entirely")
    parts = parts_of(model, family)
    for name, param in model.named_parameters():
        param.requires_grad_(part_of(name, parts) not in frozen)


def _modules_to_save(
    model: nn.Module, lora_cfg: LoraSettings, family: str, frozen: set[str]
) -> list:
    """modules_to_save with part names expanded to the part's outermost modules; the default
    "projector" is dropped where a family has none (a causal LM) or it is frozen."""
    names = {n for n, _ in model.named_modules()}
    out: list[str] = []
    for item in lora_cfg.modules_to_save:
        if item in PARTS:
            if item not in frozen:
                out += [n.removeprefix("model.") for n in part_roots(model, item, family)]
            continue
        if not any(n == item or n.endswith(f".{item}") for n in names):
            raise ConfigError(f"lora.modules_to_save: no module named {item!r} in this model")
        out.append(item)
    return list(dict.fromkeys(out))


DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
T5_TARGETS = ["q", "k", "v", "o"]  # T5 / Flan-T5 attention projections (BLIP-2 + Flan-T5)


def _targets(model: nn.Module, lora_cfg: LoraSettings) -> list[str]:
    """The configured targets; the default q/k/v/o_proj becomes q/k/v/o for a T5-style LM."""
    targets = list(lora_cfg.target_modules)
    if targets == DEFAULT_TARGETS and not any(
        n.endswith(".q_proj") for n, _ in model.named_modules()
    ):
        return T5_TARGETS
    return targets


def target_pattern(model: nn.Module, lora_cfg: LoraSettings, family: str) -> str | list[str]:
    """peft target_modules: the plain suffixes (everywhere), or the full names of the modules
    with those suffixes inside `lora.target_parts`."""
    targets = _targets(model, lora_cfg)
    if family == "causal_lm" or not lora_cfg.language_model_only:
        return targets
    parts, wanted = parts_of(model, family), set(lora_cfg.target_parts)
    names = [
        n
        for n, _ in model.named_modules()
        if any(n == t or n.endswith(f".{t}") for t in targets) and part_of(n, parts) in wanted
    ]
    if not names:
        raise ConfigError(
            f"lora.target_modules {lora_cfg.target_modules}: no such module in the parts "
            f"{lora_cfg.target_parts} of this model"
        )
    return rf"^({'|'.join(re.escape(n) for n in names)})$"


def apply_lora(
    model: nn.Module, lora_cfg: LoraSettings, family: str, model_cfg: ModelConfig | None = None
) -> nn.Module:
    """Wrap `model` with a peft LoRA adapter per `lora_cfg`; returns the model unchanged if off.
    Parts model.freeze leaves trainable and LoRA does not target stay trained in full."""
    if not lora_cfg.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    frozen = frozen_parts(model_cfg) if model_cfg is not None else {"vision_tower"}
    parts = parts_of(model, family)
    saved = _modules_to_save(model, lora_cfg, family, frozen)
    full = {
        n
        for n, p in model.named_parameters()
        if p.requires_grad
        and part_of(n, parts) not in {*frozen, "language_model", *lora_cfg.target_parts}
    }
    config = LoraConfig(
        r=lora_cfg.r,
        lora_alpha=lora_cfg.alpha,
        lora_dropout=lora_cfg.dropout,
        target_modules=target_pattern(model, lora_cfg, family),
        modules_to_save=saved or None,
        task_type="CAUSAL_LM" if family == "causal_lm" else None,
    )
    try:
        peft_model = get_peft_model(model, config)
    except ValueError as err:
        raise ConfigError(
            f"lora.target_modules {lora_cfg.target_modules}: {err}".splitlines()[0]
        ) from None
    for name, param in unwrap(peft_model).named_parameters():
        if name in full and not any(f".{m}." in f".{name}" for m in saved):
            param.requires_grad_(True)  # e.g. freeze.vision_tower false: the tower in full
    return peft_model


def trainable_parameter_names(model: nn.Module) -> list[str]:
    """Names of parameters that require grad (for logs and tests)."""
    return [n for n, p in model.named_parameters() if p.requires_grad]


def is_adapter_key(name: str) -> bool:
    """True for the adapter's own parameters (LoRA A/B and modules_to_save copies)."""
    return "lora_" in name or ".modules_to_save." in name


def base_state_dict(
    model: nn.Module, state_dict: Mapping[str, Any] | None = None
) -> dict[str, Any]:
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


def adapter_state_dict(
    model: nn.Module, state_dict: Mapping[str, Any] | None = None
) -> dict[str, Any]:
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
    model: PeftModel,
    path: str | os.PathLike[str],
    state_dict: Mapping[str, Any] | None = None,
    where: str | None = None,
) -> Path:
    """Save the peft adapter at `path` after check_adapter; state_dict: a gathered full one."""
    out = Path(path)
    check_adapter(adapter_state_dict(model, state_dict), where=where or f"adapter {out}")
    model.save_pretrained(str(out), state_dict=dict(state_dict) if state_dict else None)
    return out
