"""Saved model dirs: writing one, finding one, loading one, and one as the base of a new run.

Layout (the training checkpoint puts one at `<ckpt>/model/`; `generalist export` and
`generalist evaluate` read it, and `model.name_or_path` may name one):

    <dir>/model.json      {"format_version": 1, "model": ModelConfig, "lora": LoraSettings,
                           "family", "image_token", "base": "saved" | "reference"}
    <dir>/processor/      processor (or tokenizer for causal LMs), save_pretrained
    <dir>/base/           base weights (save_pretrained, safetensors) unless "reference":
                           a pretrained base that was not trained is re-loaded from name_or_path
    <dir>/adapter/        the peft LoRA adapter (+ modules_to_save, e.g. the projector)

`save_model_dir(bundle, dir, state_dict=None)` writes it; pass `state_dict` gathered from the
engine under ZeRO-3 (rank 0). `load_model_dir(dir)` rebuilds the bundle. `load_source(cfg)` is
the one place that decides what a config's pretrained source is: a model dir (its adapter
merged), a composed model, or a hub id / Hugging Face directory (generalist.model.pretrained).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from generalist.atomic import atomic_dir
from generalist.errors import ConfigError
from generalist.model.bundle import ModelBundle
from generalist.model.config import LoraSettings, ModelConfig
from generalist.model.lora import base_state_dict, is_adapter_key, save_adapter
from generalist.model.pretrained import compose, load_auto_model, load_pretrained, load_processor

if TYPE_CHECKING:
    from torch import nn

M = TypeVar("M", bound="nn.Module")

MODEL_DIR_VERSION = 1


def to_dtype(model: M, dtype: str) -> M:
    """The model in the configured dtype ("float32", "bfloat16", "float16")."""
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
        model = load_source(cfg)[0]
    model = to_dtype(model, cfg.dtype)
    processor = load_processor(str(d / "processor"), family)
    if lora.enabled:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(d / "adapter"), is_trainable=trainable)
    if not trainable:
        model.eval()
    tokenizer = getattr(processor, "tokenizer", processor)
    return ModelBundle(model, processor, tokenizer, meta["image_token"], family, cfg, lora)


def is_model_dir(path: str | os.PathLike[str]) -> bool:
    """True when `path` holds a model dir (its model.json)."""
    return (Path(path) / "model.json").is_file()


def load_source(cfg: ModelConfig) -> tuple[Any, Any, str]:
    """(model, processor, family) of a config's pretrained source: a model dir (adapter merged,
    training continues from those weights), a composed model, or a hub id / HF directory."""
    if cfg.family == "composed":
        return compose(cfg)
    if cfg.name_or_path is not None and is_model_dir(cfg.name_or_path):
        bundle = load_model_dir(cfg.name_or_path)
        return bundle.merged_model(), bundle.processor, bundle.family
    return load_pretrained(cfg)


def base_was_trained(bundle: ModelBundle) -> bool:
    """True when some trained parameter lives outside the adapter (so base/ must be saved)."""
    if not bundle.lora.enabled:
        return any(p.requires_grad for p in bundle.model.parameters())
    return any(
        p.requires_grad and not is_adapter_key(n) for n, p in bundle.model.named_parameters()
    )
