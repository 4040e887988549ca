"""Directories that appear whole or not at all: write into a temporary sibling, then swap it in.

Used for model dirs, exports, pretrained towers and sharded datasets: a run killed while writing
leaves the previous directory (if any) complete, never a half-written one under the real name.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty `<final>.tmp` to write into; on success it replaces `final`, on any error
    (or interrupt) it is removed and `final` is left as it was."""
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    swap_in(tmp, final)
