"""The checkpoints/ directory (layout: generalist.train.checkpoint): which step directories are
complete, the newest one, pruning old ones, and which checkpoint a run resumes from, with the
config keys a resumed run must keep."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from generalist.errors import ConfigError

_STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir(root: Path, step: int) -> Path:
    """<root>/step-000120: the directory of checkpoint `step` (zero-padded so names sort)."""
    return root / f"step-{step:06d}"


def is_complete(path: Path) -> bool:
    """A step-N directory whose trainer.json (written last) is there."""
    return _STEP_DIR.match(path.name) is not None and (path / "trainer.json").is_file()


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and is_complete(p)]
    return sorted(found, key=lambda p: int(_STEP_DIR.match(p.name).group(1)))  # type: ignore[union-attr]


def prune(root: Path, keep: int) -> None:
    """Keep the newest `keep` complete checkpoints; remove older ones and stale .tmp dirs."""
    done = complete_checkpoints(root)
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in root.glob("step-*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def latest_checkpoint(root: Path) -> Path | None:
    """The checkpoint `latest` points to, or the newest complete one if the pointer is bad."""
    pointer = root / "latest"
    if pointer.is_file():
        target = root / pointer.read_text().strip()
        if is_complete(target):
            return target
    done = complete_checkpoints(root)
    return done[-1] if done else None


def resolve_resume(resume: str | None, root: Path) -> Path | None:
    """The checkpoint to resume from: None (fresh), 'auto' (latest under root, if any), a path."""
    if resume is None:
        return None
    if resume == "auto":
        return latest_checkpoint(root)
    path = Path(resume)
    if not is_complete(path):
        raise ConfigError(
            f"config key 'resume': {path} is not a complete checkpoint (no trainer.json in a "
            f"step-N directory); pick one under {root} or use resume=auto"
        )
    return path


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
