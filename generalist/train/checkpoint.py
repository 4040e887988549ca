"""Training checkpoints, written atomically; `resume: auto` finds the latest complete one.

Layout under `<output_dir>/checkpoints/`:

    step-000120/
      engine/               DeepSpeed engine state (engine.save_checkpoint, tag "engine"):
                            trainable weights, optimizer, lr scheduler; frozen weights excluded
      model/                the model dir of generalist.model.save_model_dir (adapter, processor,
                            base weights for a from-scratch model) for export and evaluation;
                            parameters are gathered to rank 0 first under ZeRO-3
      data/rank-<r>.json    each rank's data position (stream state + micro-batches used of
                            the current length-grouping window; JSON)
      rng/rank-<r>.pt       each rank's torch/numpy/python RNG states (tensors and plain types
                            only, so they load with torch.load(weights_only=True))
      trainer.json          step, world size, the resolved config; written last
    latest                  "step-000120": the pointer, replaced atomically

A save goes into `step-N.tmp/` and is renamed to `step-N/` only when every rank has finished, then
`latest` is replaced (tmp file + os.replace). A save killed at any point leaves the previous
checkpoint and `latest` untouched; stale `.tmp` directories are ignored and cleaned up later.
All ranks must see the same filesystem (one machine, or a shared filesystem across nodes).
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from generalist import distributed as dist
from generalist.atomic import atomic_write
from generalist.errors import ConfigError, GeneralistError
from generalist.model.bundle import ModelBundle
from generalist.model.model_dir import save_model_dir
from generalist.train.checkpoint_layout import latest_checkpoint, prune, step_dir
from generalist.train.rng_state import rng_state

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine

ENGINE_TAG = "engine"


class CheckpointError(GeneralistError):
    """A checkpoint that cannot be written (disk full) or must not be loaded (unsafe pickle)."""


def gathered_state_dict(engine: DeepSpeedEngine) -> dict[str, torch.Tensor] | None:
    """The full model state dict on rank 0 under ZeRO-3 (collective: call on every rank);
    None where parameters are not partitioned (the model's own state dict is complete)."""
    if engine.zero_optimization_partition_weights():
        return engine._zero3_consolidated_16bit_state_dict()
    return None


def save_checkpoint(
    root: Path,
    step: int,
    engine: DeepSpeedEngine,
    bundle: ModelBundle,
    position: Mapping[str, Any],
    config: Mapping[str, Any],
    keep: int,
) -> Path:
    """Write checkpoint `step` under `root` (collective: every rank calls it). Returns its dir.
    A full disk raises CheckpointError; the previous checkpoint and `latest` stay as they were."""
    final = step_dir(root, step)
    tmp = final.with_name(final.name + ".tmp")
    with _disk_full_keeps_latest(root, final, tmp):
        if dist.is_main():
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        dist.barrier()
        engine.save_checkpoint(
            str(tmp), tag=ENGINE_TAG, save_latest=False, exclude_frozen_parameters=True
        )
        state_dict = gathered_state_dict(engine)
        if dist.is_main():
            try:
                save_model_dir(bundle, tmp / "model", state_dict=state_dict)
            except GeneralistError as err:
                # Before the first update with lr > 0 (warmup) LoRA B is still zero: the engine
                # state below is all a resume needs; export/evaluate wait for a later checkpoint.
                if "empty adapter" not in str(err):
                    raise
                warnings.warn(f"checkpoint step {step}: no model/ yet ({err})", stacklevel=2)
        rank = dist.rank()
        (tmp / "data").mkdir(exist_ok=True)
        (tmp / "rng").mkdir(exist_ok=True)
        atomic_write(tmp / "data" / f"rank-{rank}.json", json.dumps(position), fsync=True)
        torch.save(rng_state(), tmp / "rng" / f"rank-{rank}.pt")
        dist.barrier()  # every rank's files are in tmp
        if dist.is_main():
            meta = {"step": step, "world_size": dist.world_size(), "config": dict(config)}
            atomic_write(tmp / "trainer.json", json.dumps(meta, indent=2, default=str), fsync=True)
            if final.exists():  # the same step saved again after a resume
                shutil.rmtree(final)
            os.replace(tmp, final)
            atomic_write(root / "latest", final.name + "\n", fsync=True)
            prune(root, keep)
        dist.barrier()
    return final


@contextmanager
def _disk_full_keeps_latest(root: Path, final: Path, tmp: Path) -> Iterator[None]:
    """A full disk inside the block: the partial save is removed, CheckpointError raised."""
    try:
        yield
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-written checkpoint behind
        kept = latest_checkpoint(root)
        raise CheckpointError(
            f"disk full while writing checkpoint {final} ({err.strerror}); the partial save was "
            f"removed and {kept or 'no earlier checkpoint'} is kept as the latest. Free space "
            f"under {root} and run again (resume=auto continues from the latest checkpoint)"
        ) from None


def load_checkpoint(
    path: Path, engine: DeepSpeedEngine
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Restore the engine from checkpoint `path` (every rank). Returns (step, data position,
    RNG state); the caller applies the RNG state (set_rng_state) just before training."""
    meta = json.loads((path / "trainer.json").read_text())
    saved_world = int(meta["world_size"])
    # ZeRO-3 partitions the weights themselves by rank: DeepSpeed reloads them only at the
    # saved world size (ZeRO-1/2 keep whole weights and merge their fp32 partitions)
    if saved_world != dist.world_size() and engine.zero_optimization_partition_weights():
        raise ConfigError(
            f"checkpoint {path} was written by {saved_world} ranks under ZeRO-3, this run "
            f"has {dist.world_size()}; resume ZeRO-3 with {saved_world} ranks (or convert "
            f"with DeepSpeed's ds_to_universal), or set resume=none"
        )
    # ZeRO-1/2 optimizer moments are partitioned by rank, and DeepSpeed refuses to re-split
    # them for another world size: the weights (fp32 partitions merged and re-split), the lr
    # schedule and the data position carry over, the moments restart
    moments = saved_world == dist.world_size() or not engine.zero_optimization()
    if saved_world != dist.world_size() and dist.is_main():
        restart = "" if moments else "; the ZeRO optimizer's moments restart"
        print(
            f"generalist train: resuming {path} at world size {dist.world_size()} (saved by "
            f"{saved_world} ranks): weights, lr schedule and the data stream's global sequence "
            f"continue{restart}",
            flush=True,
        )
    # DeepSpeed's own loader unpickles with weights_only=False: a crafted file could run code.
    engine.checkpoint_engine.load = weights_only_load
    loaded, _ = engine.load_checkpoint(
        str(path),
        tag=ENGINE_TAG,
        load_module_strict=False,  # frozen weights are not in it; build_model recreates them
        load_optimizer_states=moments,
        load_lr_scheduler_states=True,
    )
    if loaded is None:
        raise ConfigError(f"checkpoint {path}: DeepSpeed could not load {path / ENGINE_TAG}")
    # the data position is the same on every rank; a rank the saved run did not have takes
    # rank 0's files (its RNG state too: dropout masks then differ from any earlier run's)
    rank = dist.rank() if dist.rank() < saved_world else 0
    position = json.loads((path / "data" / f"rank-{rank}.json").read_text())
    rng = weights_only_load(path / "rng" / f"rank-{rank}.pt")
    return int(meta["step"]), position, rng


# -> Any: torch.load's result is whatever was saved (a state dict, RNG states, DeepSpeed's own)
def weights_only_load(path: str | Path, map_location: str | torch.device | None = None) -> Any:  # noqa: ANN401
    """torch.load(weights_only=True), allowing only the plain DeepSpeed classes its optimizer
    state holds; anything else (a pickled callable, an arbitrary object) is a CheckpointError."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    try:
        with torch.serialization.safe_globals([LossScaler, ZeroStageEnum, fragment_address]):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).split("WeightsUnpickler error:")[-1].strip().splitlines()[0]
        raise CheckpointError(
            f"checkpoint file {path} holds more than tensors and plain values ({first}); it was "
            f"not loaded, as unpickling it could run code. Use a checkpoint written by "
            f"`generalist train`, or resume=none"
        ) from None
