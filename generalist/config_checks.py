"""Checks of a training config against what lives outside the file, run before any compute:
the registered tasks/mixture, the shards on disk, the model source and the DeepSpeed JSON
(resolved from a ZeRO stage or a path and filled from the config).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generalist.catalog import load_catalog
from generalist.errors import ConfigError, GeneralistError
from generalist.mixture import MIXTURES, Mixture, mixture_from_rates
from generalist.task import TASKS

if TYPE_CHECKING:
    from generalist.config import TrainConfig

REPO_CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def deepspeed_json(cfg: TrainConfig) -> dict[str, Any]:
    """The DeepSpeed JSON for `cfg.deepspeed`: a stage number or a path (read, not yet filled)."""
    if isinstance(cfg.deepspeed, int):
        bundled = REPO_CONFIGS / "deepspeed" / f"zero{cfg.deepspeed}.json"
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


def _looks_like_path(name: str) -> bool:
    # Hub ids are "org/name"; anything absolute, relative-dotted, home-based or deeper is local.
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or Path(name).exists()


def _check_model_source(key: str, name: str | None) -> None:
    """A local path must exist; a hub id must be in the local cache when HF_HUB_OFFLINE is set
    (otherwise it is downloaded later, and a wrong id fails there)."""
    if not name:
        return
    if _looks_like_path(name):
        if not Path(name).expanduser().exists():
            raise ConfigError(
                f"config key {key!r}: {name!r} is not an existing local path "
                f"(give a Hugging Face hub id, a local model directory, or model.tiny)"
            )
        return
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(name, "config.json"), str):
            raise ConfigError(
                f"config key {key!r}: {name!r} is not in the local Hugging Face cache and "
                f"HF_HUB_OFFLINE is set; download it first or give a local directory"
            )


def training_mixture(cfg: TrainConfig) -> Mixture:
    """The mixture the run trains on: the registered `mixture` or the inline `tasks` rates."""
    if (cfg.mixture is None) == (cfg.tasks is None):
        raise ConfigError(
            "give exactly one of config keys 'mixture' (a registered name) or 'tasks' "
            "(inline {task: rate}); `generalist tasks` lists both"
        )
    if cfg.mixture is not None:
        try:
            mixture = MIXTURES.get(cfg.mixture)
        except GeneralistError as err:
            raise ConfigError(f"config key 'mixture': {err}") from None
    else:
        assert cfg.tasks is not None
        try:
            mixture = mixture_from_rates("inline", cfg.tasks)
        except GeneralistError as err:
            raise ConfigError(f"config key 'tasks': {err}") from None
    for name, rate in mixture.tasks:
        try:
            task = TASKS.get(name)
        except GeneralistError as err:
            key = "mixture" if cfg.mixture else f"tasks.{name}"
            raise ConfigError(f"config key {key!r}: {err}") from None
        if rate > 0 and task.train_split is None:
            raise ConfigError(
                f"config key 'tasks.{name}': task {name!r} is evaluation-only (no train split)"
            )
    return mixture


def _check_shards(root: Path, needed: set[tuple[str, str]], verify: bool = False) -> None:
    """Every (dataset, split) the run reads has complete shards with records (and, with
    `verify`, shard files whose sha256 matches the manifest: a changed shard stops the run)."""
    if not root.is_dir():
        raise ConfigError(
            f"config key 'shards': directory {str(root)!r} does not exist; write shards with "
            f"`generalist shard DATASET --out {root}`"
        )
    for dataset, split in sorted(needed):
        manifest = root / dataset / "manifest.json"
        if not manifest.is_file():
            raise ConfigError(
                f"config key 'shards': no complete shards for dataset {dataset!r} "
                f"({manifest} is missing); run `generalist shard {dataset} --out {root}`"
            )
        try:
            splits = json.loads(manifest.read_text()).get("splits", {})
        except (json.JSONDecodeError, AttributeError) as err:
            raise ConfigError(f"config key 'shards': {manifest} is unreadable ({err})") from None
        if not splits.get(split, {}).get("count"):
            raise ConfigError(
                f"config key 'shards': dataset {dataset!r} under {root} has no {split!r} records "
                f"(has {sorted(splits)}); re-run `generalist shard {dataset} --out {root}`"
            )
        if verify:
            from generalist.shards import verify_dataset

            verify_dataset(root, dataset, [split])


def check_config(cfg: TrainConfig) -> Mixture:
    """Check what lives outside the file; cheap, and run before any distributed setup or model
    building. Returns the training mixture."""
    try:
        load_catalog(cfg.imports)
    except GeneralistError as err:
        raise ConfigError(f"config key 'imports': {err}") from None
    mixture = training_mixture(cfg)
    needed = {(TASKS.get(t).dataset, "train") for t, r in mixture.tasks if r > 0}
    if cfg.eval.every:
        names = cfg.eval.tasks or [t for t, r in mixture.tasks if r > 0]
        for name in names:
            try:
                task = TASKS.get(name)
            except GeneralistError as err:
                raise ConfigError(f"config key 'eval.tasks': {err}") from None
            needed.add((task.dataset, cfg.eval.split))
    _check_shards(cfg.shards, needed, verify=cfg.verify_shards)
    for key in ("name_or_path", "vision_encoder", "language_model"):
        _check_model_source(f"model.{key}", getattr(cfg.model, key, None))
    if cfg.model.tiny is not None and cfg.model.tiny.vision_init is not None:
        _check_model_source("model.tiny.vision_init", cfg.model.tiny.vision_init)
    if cfg.resume not in (None, "auto") and not Path(cfg.resume).is_dir():
        raise ConfigError(
            f"config key 'resume': checkpoint directory {cfg.resume!r} does not exist "
            f"(use 'auto' for the latest under output_dir, or 'none')"
        )
    _check_output_dir(cfg.output_dir)
    deepspeed_json(cfg)
    return mixture


def _check_output_dir(out: Path) -> None:
    """output_dir is (or can become) a writable directory."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"config key 'output_dir': {str(out)!r} is a file, not a directory")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"config key 'output_dir': {str(out)!r} cannot be created or written")


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
