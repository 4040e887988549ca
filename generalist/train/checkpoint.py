"""Training checkpoints, whole: the layout, saving (atomic, with a manifest written last),
which checkpoint `resume` continues from, loading, the RNG states, and pruning.

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
      trainer.json          step, world size, the resolved config (secrets redacted)
      manifest.json         every other file: relative path, size, sha256; written last
    latest                  "step-000120": the newest save, replaced atomically (for people
                            and tools; resume chooses by the manifests, below)

Saving: a save goes into `step-N.tmp/`; when every rank has written its files, rank 0 writes
trainer.json and then manifest.json, renames the directory to `step-N/` and replaces `latest`.
A save killed at any point leaves the earlier checkpoints untouched; a full disk removes the
partial save and says, in one line, which path it was writing and how much space a save needs.

Resuming: a checkpoint is complete only when its manifest is there and every file it lists
has the recorded size and checksum. `resume: auto` takes the newest complete checkpoint and
says which newer ones it skipped and why; when step directories exist but none is complete it
refuses (one line per reason) rather than start again at step 0. `resume: none` starts afresh
and moves existing checkpoints aside (`checkpoints.previous-<time>/`), never deleting them.

torch, numpy and DeepSpeed are imported inside the functions that need them: the CLI picks the
checkpoint to resume (and reports a finished run) before those heavy imports.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import random
import re
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generalist.atomic import atomic_write
from generalist.errors import ConfigError, GeneralistError
from generalist.redact import redact_json

if TYPE_CHECKING:
    import torch
    from deepspeed import DeepSpeedEngine

    from generalist.model.bundle import ModelBundle

ENGINE_TAG = "engine"
MANIFEST = "manifest.json"
_STEP_DIR = re.compile(r"^step-(\d+)$")


class CheckpointError(GeneralistError):
    """A checkpoint that cannot be written (disk full) or must not be loaded (damaged, unsafe)."""


# --- layout ------------------------------------------------------------------------------------


def step_dir(root: Path, step: int) -> Path:
    """<root>/step-000120: the directory of checkpoint `step` (zero-padded so names sort)."""
    return root / f"step-{step:06d}"


def step_dirs(root: Path) -> list[Path]:
    """Every step-N directory under `root` (complete or not; `.tmp` saves not), oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


# --- the manifest: what makes a checkpoint complete ----------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(path: Path) -> None:
    """manifest.json of checkpoint directory `path`: every file in it with size and sha256.
    Written last (atomically): a directory without it is a save that did not finish."""
    files = {
        str(f.relative_to(path)): {"size": f.stat().st_size, "sha256": _sha256(f)}
        for f in sorted(path.rglob("*"))
        if f.is_file() and f.name != MANIFEST
    }
    atomic_write(path / MANIFEST, json.dumps({"files": files}, indent=1), fsync=True)


def checkpoint_problem(path: Path) -> str | None:
    """Why checkpoint `path` cannot be resumed from (one clause naming the file), or None when
    every file its manifest lists is present with the recorded size and checksum."""
    manifest = path / MANIFEST
    try:
        files = json.loads(manifest.read_text())["files"]
    except FileNotFoundError:
        return f"{manifest} is missing (the save did not finish)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{manifest} is unreadable ({err})"
    for name, want in files.items():
        file = path / name
        try:
            size = file.stat().st_size
            if size != want["size"]:
                return f"{file} has {size} bytes, the manifest recorded {want['size']}"
            if _sha256(file) != want["sha256"]:
                return f"{file} does not match its recorded sha256"
        except FileNotFoundError:
            return f"{file} is missing"
        except OSError as err:
            return f"{file} is unreadable ({err.strerror})"
    return None


def is_complete(path: Path) -> bool:
    """A step-N directory whose manifest's files are all there, intact."""
    return _STEP_DIR.match(path.name) is not None and checkpoint_problem(path) is None


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    return [p for p in step_dirs(root) if is_complete(p)]


def latest_checkpoint(root: Path) -> Path | None:
    """The newest complete checkpoint under `root`, or None."""
    done = complete_checkpoints(root)
    return done[-1] if done else None


def _checkpoint_size(path: Path) -> int:
    """Bytes of a complete checkpoint (its manifest), 0 when unknown."""
    try:
        files = json.loads((path / MANIFEST).read_text())["files"]
        return sum(int(f["size"]) for f in files.values())
    except (OSError, ValueError, KeyError, TypeError):
        return 0


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0


# --- which checkpoint a run continues from ---------------------------------------------------


def resolve_resume(resume: str | None, root: Path, say: bool = False) -> Path | None:
    """The checkpoint to resume from: None (`resume: none`, fresh), 'auto' (the newest complete
    one under root; None when there is no step directory at all), or a path.

    `auto` over step directories none of which is complete is a CheckpointError: a run never
    starts again at step 0 over checkpoints unless told (resume=none). `say`: print which
    newer checkpoints were skipped and why (rank 0 of the run)."""
    if resume is None:
        return None
    if resume != "auto":
        path = Path(resume)
        problem = checkpoint_problem(path) if _STEP_DIR.match(path.name) else None
        if not path.is_dir() or not _STEP_DIR.match(path.name) or problem:
            why = problem or "not a step-N checkpoint directory"
            raise ConfigError(
                f"config key 'resume': {path} is not a complete checkpoint ({why}); pick one "
                f"under {root} or use resume=auto"
            )
        return path
    skipped: list[str] = []
    for path in reversed(step_dirs(root)):
        problem = checkpoint_problem(path)
        if problem is None:
            if say:
                for line in skipped:
                    print(f"generalist train: resume: skipped {line}")
            return path
        skipped.append(f"{path.name}: {problem}")
    if skipped:
        raise CheckpointError(
            f"no complete checkpoint under {root} to resume from ({'; '.join(skipped)}); "
            f"repair or remove them, or set resume=none to start afresh (they are moved aside "
            f"to checkpoints.previous-<time>/, not deleted)"
        )
    return None


def move_aside(root: Path) -> Path | None:
    """`resume: none` over existing checkpoints: rename `root` to
    `<root>.previous-<time>` (never deleted). Returns the new path, None if nothing was there."""
    if not step_dirs(root):
        return None
    base = root.with_name(f"{root.name}.previous-{time.strftime('%Y%m%d-%H%M%S')}")
    target, n = base, 1
    while target.exists():
        n += 1
        target = base.with_name(f"{base.name}.{n}")
    os.replace(root, target)
    return target


def set_aside_for_fresh_start(root: Path) -> None:
    """`resume: none` (collective): rank 0 moves existing checkpoints aside and says where."""
    from generalist import distributed as dist

    if dist.is_main():
        moved = move_aside(root)
        if moved is not None:
            print(f"generalist train: resume=none: the existing checkpoints moved to {moved}")
    dist.barrier()


# Config keys a resumed run must share with the checkpoint (others, e.g. steps, may change).
# (micro_batch_size and num_workers may change: the stream resumes at another world size or
# batch, generalist.mixing.progress.)
RESUME_KEYS = ("model", "lora", "mixture", "tasks", "seed", "batch.group_by_length")
# how the same weights are computed, not what they are: free to change on resume
RESUME_FREE = ("model.gradient_checkpointing", "model.attn_implementation", "model.liger_kernel")


def _difference(old: object, new: object, key: str) -> tuple[str, object, object] | None:
    """The first (dotted key, old, new) where two JSON values differ, descending into dicts."""
    if key in RESUME_FREE:
        return None
    if isinstance(old, dict) and isinstance(new, dict):
        for part in sorted(set(old) | set(new)):
            found = _difference(old.get(part), new.get(part), f"{key}.{part}")
            if found:
                return found
        return None
    return None if old == new else (key, old, new)


def check_resumable(path: Path, config: Mapping[str, Any]) -> None:
    """ConfigError naming the first key under RESUME_KEYS whose value differs from the
    checkpoint's (cheap: reads trainer.json; call it before any distributed setup)."""
    saved = json.loads((path / "trainer.json").read_text())["config"]
    config = redact_json(dict(config))  # type: ignore[assignment] # as trainer.json holds it
    for key in RESUME_KEYS:
        old, new = saved, dict(config)
        for part in key.split("."):
            old, new = old.get(part), new.get(part)
        found = _difference(old, new, key)
        if found:
            name, was, now = found
            raise ConfigError(
                f"config key {name!r} is {now!r} but checkpoint {path} was written with {was!r}; "
                f"resume with the same value, or start afresh (resume=none or a new output_dir)"
            )


# --- RNG states --------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """This process's torch/CUDA/numpy/python RNG states as tensors and plain types, so they
    are saved in a file that loads with torch.load(weights_only=True)."""
    import numpy as np
    import torch

    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "kind": str(np_kind),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
        "python": {"version": version, "state": list(py_state), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what rng_state returned (CUDA states only where CUDA is present)."""
    import numpy as np
    import torch

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    keys = n["keys"].numpy().astype(np.uint32)
    np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --- saving ------------------------------------------------------------------------------------


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
    A full disk raises CheckpointError; the earlier checkpoints stay as they were."""
    import torch

    from generalist import distributed as dist
    from generalist.model.model_dir import save_model_dir

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
            config = redact_json(dict(config))  # type: ignore[assignment] # no passwords on disk
            meta = {"step": step, "world_size": dist.world_size(), "config": config}
            atomic_write(tmp / "trainer.json", json.dumps(meta, indent=2, default=str), fsync=True)
            write_manifest(tmp)  # last: the checkpoint is complete from here on
            if final.exists():  # the same step saved again after a resume
                shutil.rmtree(final)
            os.replace(tmp, final)
            atomic_write(root / "latest", final.name + "\n", fsync=True)
            prune(root, keep)
        dist.barrier()
    return final


def _is_disk_full(err: BaseException) -> bool:
    """ENOSPC/EDQUOT/EFBIG, however the writer reports it: an OSError, or the errors of
    safetensors (SafetensorError: "IoError(Os { code: 28, kind: StorageFull ...") and of
    torch.save's zip writer (RuntimeError "... file write failed"), which carry no errno."""
    if isinstance(err, OSError):
        return err.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    text = str(err)
    codes = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
    if type(err).__name__ == "SafetensorError":
        return any(f"code: {c}," in text for c in codes) or "StorageFull" in text
    return isinstance(err, RuntimeError) and "file write failed" in text


@contextmanager
def _disk_full_keeps_latest(root: Path, final: Path, tmp: Path) -> Iterator[None]:
    """A full disk inside the block: the partial save is removed, CheckpointError raised naming
    the path and the space a save needs (the last complete checkpoint's size, else at least
    what this save had written)."""
    try:
        yield
    except Exception as err:
        if not _is_disk_full(err):
            raise
        written = _tree_size(tmp)
        shutil.rmtree(tmp, ignore_errors=True)  # never leave a half-written checkpoint behind
        kept = latest_checkpoint(root)
        size = _checkpoint_size(kept) if kept else 0
        need = (
            f"about {_mb(size)} (the size of {kept.name})"
            if kept and size
            else (f"more than the {_mb(written)} it had written")
        )
        free = shutil.disk_usage(root).free if root.exists() else 0
        reason = err.strerror if isinstance(err, OSError) else "no space left on device"
        raise CheckpointError(
            f"disk full while writing checkpoint {final} ({reason}): a save needs {need}, "
            f"{_mb(free)} is free; the partial save was removed and "
            f"{kept or 'no earlier checkpoint'} is kept as the latest. Free space under {root} "
            f"and run again (resume=auto continues from the latest checkpoint)"
        ) from None


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def prune(root: Path, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints; remove older complete ones and stale .tmp
    saves. A damaged step directory is left for the user to look at."""
    done = complete_checkpoints(root)
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob("step-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


# --- loading -----------------------------------------------------------------------------------


def load_checkpoint(
    path: Path,
    engine: DeepSpeedEngine,
) -> tuple[int, dict[str, Any], dict[str, Any]]:
    """Restore the engine from checkpoint `path` (every rank). Returns (step, data position,
    RNG state); the caller applies the RNG state (set_rng_state) just before training."""
    from generalist import distributed as dist

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
    try:
        loaded, _ = engine.load_checkpoint(
            str(path),
            tag=ENGINE_TAG,
            load_module_strict=False,  # frozen weights are not in it; build_model recreates them
            load_optimizer_states=moments,
            load_lr_scheduler_states=True,
        )
    except GeneralistError:
        raise
    except Exception as err:  # the manifest matched, so the files were written unloadable
        raise CheckpointError(
            f"checkpoint {path / ENGINE_TAG}: DeepSpeed could not load it "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); resume "
            f"from an earlier checkpoint (resume=<path>) or set resume=none"
        ) from None
    if loaded is None:
        raise CheckpointError(f"checkpoint {path}: DeepSpeed could not load {path / ENGINE_TAG}")
    # the data position is the same on every rank; a rank the saved run did not have takes
    # rank 0's files (its RNG state too: dropout masks then differ from any earlier run's)
    rank = dist.rank() if dist.rank() < saved_world else 0
    position = json.loads((path / "data" / f"rank-{rank}.json").read_text())
    rng = weights_only_load(path / "rng" / f"rank-{rank}.pt")
    return int(meta["step"]), position, rng


# -> Any: torch.load's result is whatever was saved (a state dict, RNG states, DeepSpeed's own)
def weights_only_load(path: str | Path, map_location: object = None) -> Any:  # noqa: ANN401
    """torch.load(weights_only=True), allowing only the plain DeepSpeed classes its optimizer
    state holds; anything else (a pickled callable, an arbitrary object) is a CheckpointError."""
    import torch
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
