"""Preflight: a training config checked against what lives outside the file, before any compute:
the registered tasks/mixture, the shards on disk, the model source, the output directory and
the DeepSpeed JSON."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

from generalist.catalog.loading import load_catalog
from generalist.catalog.mixture import MIXTURES, Mixture, mixture_from_rates
from generalist.catalog.task import TASKS
from generalist.errors import ConfigError, DataError, GeneralistError
from generalist.eval.metrics.scorers import check_scorers
from generalist.model.hub import check_hub_id, looks_like_path
from generalist.model.kernels import check_kernel_packages
from generalist.shards.manifest import load_manifest, verify_dataset
from generalist.train.config import TrainConfig
from generalist.train.deepspeed_config import deepspeed_json


def _check_model_source(key: str, name: str | None) -> None:
    """A local path must exist; a hub id must be cached, or the hub must answer (a second's
    check, generalist.model.hub: not huggingface_hub's half a minute of retries)."""
    if not name:
        return
    if looks_like_path(name) or Path(name).exists():
        if not Path(name).expanduser().exists():
            raise ConfigError(
                f"config key {key!r}: {name!r} is not an existing local path "
                f"(give a Hugging Face hub id, a local model directory, or model.tiny)"
            )
        return
    check_hub_id(key, name)


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


def _check_shards(root: Path | str, needed: set[tuple[str, str]], verify: bool = False) -> None:
    """Every (dataset, split) the run reads has complete shards with records (and, with
    `verify`, shard files whose sha256 matches the manifest: a changed shard stops the run;
    under a URL only their presence, see verify_dataset). A URL root is checked through its
    manifests (not every server lists directories)."""
    if isinstance(root, Path) and not root.is_dir():
        raise ConfigError(
            f"config key 'shards': directory {str(root)!r} does not exist; write shards with "
            f"`generalist shard DATASET --out {root}`"
        )
    for dataset, split in sorted(needed):
        try:
            splits = load_manifest(root, dataset)["splits"]
        except DataError as err:
            raise ConfigError(
                f"config key 'shards': no complete shards for dataset {dataset!r} ({err})"
            ) from None
        if not splits.get(split, {}).get("count"):
            raise ConfigError(
                f"config key 'shards': dataset {dataset!r} under {root} has no {split!r} records "
                f"(has {sorted(splits)}); re-run `generalist shard {dataset} --out {root}`"
            )
        if verify:
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
            check_scorers([task], cfg.eval.scorers)  # clinical metrics' weights: eval.scorers
    _check_shards(cfg.shards, needed, verify=cfg.verify_shards)
    _warn_small_train_splits(cfg, mixture)
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
    check_kernel_packages(cfg.model)  # the CUDA check waits for the device (apply_kernels)
    deepspeed_json(cfg)
    return mixture


def _warn_small_train_splits(cfg: TrainConfig, mixture: Mixture) -> None:
    """A warning (not an error) per task whose train split has fewer examples than one
    micro-batch: its examples may repeat within a batch. Not refused: the run is still correct
    (a small task in a proportional mixture is drawn again across epochs anyway, and a share of
    a mixed batch may fit its split); tiny smoke-test splits stay usable. Said once (rank 0)."""
    if os.environ.get("RANK", "0") != "0":
        return
    size = cfg.batch.micro_batch_size
    for name, rate in mixture.tasks:
        if rate <= 0:
            continue
        dataset = TASKS.get(name).dataset
        count = load_manifest(cfg.shards, dataset)["splits"].get("train", {}).get("count", 0)
        if 0 < count < size:
            warnings.warn(
                f"task {name!r}: its train split has {count} examples, fewer than "
                f"batch.micro_batch_size={size}: examples repeat within a batch; lower "
                f"batch.micro_batch_size (raise batch.grad_accum to keep the batch) or add data",
                stacklevel=2,
            )


def _check_output_dir(out: Path) -> None:
    """output_dir is (or can become) a writable directory."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"config key 'output_dir': {str(out)!r} is a file, not a directory")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"config key 'output_dir': {str(out)!r} cannot be created or written")
