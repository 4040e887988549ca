"""Files and directories that appear whole or not at all: write into a temporary sibling, then
rename it over the real name (one `os.replace`, atomic on a POSIX filesystem).

Used for checkpoint pointers, manifests and run records (`atomic_write`) and for model dirs,
exports, pretrained towers and sharded datasets (`atomic_dir`): a run killed while writing leaves
the previous file or directory (if any) complete, never a half-written one under the real name.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def atomic_write(path: Path, text: str, fsync: bool = False) -> None:
    """Write `text` to a temporary sibling, then rename it over `path` (never half written).

    fsync: the bytes reach the disk before the rename (checkpoints: a power cut must not leave
    an empty `latest`); metrics files skip it, as they are rewritten often.
    """
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as file:
        file.write(text)
        if fsync:
            file.flush()
            os.fsync(file.fileno())
    os.replace(tmp, path)


def swap_in(tmp: Path, final: Path) -> None:
    """Replace `final` with the finished `tmp`; an old `final` stays complete until the rename."""
    if not final.exists():
        os.replace(tmp, final)
        return
    old = final.parent / f".{final.name}.old-{os.getpid()}"
    shutil.rmtree(old, ignore_errors=True)
    os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def atomic_dir(final: Path, tmp: Path | None = None) -> Iterator[Path]:
    """Yield an empty temporary directory to write into (default `<final>.tmp`); on success it
    replaces `final`, on any error (or interrupt) it is removed and `final` is left as it was."""
    tmp = tmp or final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_in(tmp, final)
