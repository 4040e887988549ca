"""One run per output_dir: a lock file `<output_dir>/run.lock` (host, pid, start time).

Two runs writing one output_dir prune each other's checkpoints and interleave one
metrics.jsonl. Rank 0 of a run creates the lock (O_CREAT | O_EXCL, so two runs starting together
cannot both win) and tells the other ranks the outcome (a broadcast): the ranks of one run share
one lock, and every rank of a refused run stops with the same line naming the holder. A lock
whose process is gone (same host, pid not alive: a run killed with -9) is taken over with a
line. A lock held from another host is never taken over (we cannot see its processes): remove
the file by hand once that run is certainly gone. The lock is removed when the run ends.
"""

from __future__ import annotations

import atexit
import json
import os
import socket
import time
from pathlib import Path

from generalist.errors import GeneralistError

LOCK = "run.lock"


class RunLockError(GeneralistError):
    """The output_dir is in use by another run."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _create(path: Path, holder: dict[str, object]) -> bool:
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(holder, f)
    return True


def _describe(holder: dict[str, object]) -> str:
    started = holder.get("started", "?")
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started {started}"


def acquire(output_dir: Path) -> tuple[Path, str | None]:
    """Take the lock of `output_dir` for this process (rank 0). Returns (lock path, a line to
    print when a stale lock was taken over, else None); RunLockError when a live run holds it."""
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / LOCK
    me = {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    note = None
    for _ in range(3):  # a stale lock removed by a rival between our tries: look again
        if _create(path, me):
            return path, note
        try:
            holder = json.loads(path.read_text())
        except FileNotFoundError:
            continue
        except ValueError:  # written by a process killed mid-write: its first bytes only
            holder = {}
        pid = holder.get("pid")
        same_host = holder.get("host") == me["host"]
        if same_host and isinstance(pid, int) and not _alive(pid):
            note = (
                f"generalist train: took over the stale lock {path} of a run that is gone "
                f"({_describe(holder)})"
            )
            path.unlink(missing_ok=True)
            continue
        raise RunLockError(
            f"output_dir {output_dir} is in use by another run ({_describe(holder)}; lock "
            f"{path}); wait for it, use another output_dir, or delete the lock if that run is gone"
        )
    raise RunLockError(f"could not take the lock {path}: other runs keep taking it")


def release(path: Path) -> None:
    """Remove the lock if this process still holds it."""
    try:
        holder = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        path.unlink(missing_ok=True)


def hold_output_dir(output_dir: Path) -> Path:
    """Collective: rank 0 takes the lock of `output_dir` and tells every rank the outcome, so
    the ranks of a refused run all stop with the holder's line. Released at process exit."""
    import torch.distributed as torch_dist

    from generalist import distributed as dist

    outcome: list[object] = [None]
    path = output_dir / LOCK
    if dist.is_main():
        try:
            path, note = acquire(output_dir)
            atexit.register(release, path)
            if note:
                print(note)
        except RunLockError as err:
            outcome[0] = str(err)
    if torch_dist.is_initialized() and dist.world_size() > 1:
        torch_dist.broadcast_object_list(outcome, src=0)
    if outcome[0] is not None:
        raise RunLockError(str(outcome[0]))
    return path
