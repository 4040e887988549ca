"""The DeepSpeed JSON of a run: a ZeRO stage (the JSONs shipped in generalist/train/zero/, also
linked from the repository's configs/deepspeed/) or a path, with its "auto" values filled from
the training config."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from generalist.errors import ConfigError
from generalist.train.config import TrainConfig


def deepspeed_json(cfg: TrainConfig) -> dict[str, Any]:
    """The DeepSpeed JSON for `cfg.deepspeed`: a stage number or a path (read, not yet filled)."""
    if isinstance(cfg.deepspeed, int):
        bundled = resources.files("generalist.train") / "zero" / f"zero{cfg.deepspeed}.json"
        if bundled.is_file():
            return json.loads(bundled.read_text())
        return {"zero_optimization": {"stage": cfg.deepspeed}}
    path = Path(cfg.deepspeed)
    if not path.is_file():
        raise ConfigError(
            f"config key 'deepspeed': {cfg.deepspeed!r} is neither a ZeRO stage (0-3) nor an "
            f"existing DeepSpeed JSON file"
        )
    try:
        ds = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ConfigError(f"config key 'deepspeed': {path} is not valid JSON ({err})") from None
    if not isinstance(ds, dict):
        raise ConfigError(f"config key 'deepspeed': {path} must hold a JSON object")
    return ds


def filled_deepspeed_config(cfg: TrainConfig, precision: str) -> dict[str, Any]:
    """The DeepSpeed JSON with its "auto" values (and missing batch keys) taken from `cfg`."""
    ds = {k: v for k, v in deepspeed_json(cfg).items() if not k.startswith("_")}
    filled = {
        "train_micro_batch_size_per_gpu": cfg.batch.micro_batch_size,
        "gradient_accumulation_steps": cfg.batch.grad_accum,
        "gradient_clipping": cfg.optim.grad_clip,
    }
    for key, value in filled.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    ds.pop("train_batch_size", None)  # derived by DeepSpeed from the two above and world size
    for name in ("bf16", "fp16"):
        section = dict(ds.get(name) or {})
        if section.get("enabled", "auto") == "auto":
            section["enabled"] = precision == name
        ds[name] = section
    optimizer = ds.get("optimizer")
    if optimizer:
        params = optimizer.setdefault("params", {})
        auto = {"lr": cfg.optim.lr, "betas": list(cfg.optim.betas)}
        auto["weight_decay"] = cfg.optim.weight_decay
        for key, value in auto.items():
            if params.get(key, "auto") == "auto":
                params[key] = value
    ds.setdefault("steps_per_print", 10**9)  # we log ourselves
    return ds
