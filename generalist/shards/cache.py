"""Reading shards that live under a URL: whole shards fetched into a bounded local cache (the
default), or ranged reads straight from the remote file (`max_bytes=0`).

    cache = ShardCache("/scratch/shard-cache", max_bytes=50 << 30)
    file = cache.open(shard)      # a local file: the shard itself, or its cached copy
    index = cache.index(shard)    # its tar index (member offsets), for random access

Local shards pass straight through (opened where they are, nothing copied). A remote shard is
downloaded once into `<directory>/<sha256>.tar`; while it streams in, its sha256 is computed and
compared with the manifest's, and a mismatch is a DataError naming the shard (nothing is kept).
Copies are named by content, so processes (ranks, DataLoader workers, later runs) share them.
Before a copy is added, the least recently used ones are removed until the new total fits in
`max_bytes`; a shard larger than the whole cache is a ConfigError. With `max_bytes=0` nothing
is copied: the tar index is read from the remote file's headers and each sample by one ranged
request (no sha256 check: that would need the whole file).

Defaults: GENERALIST_SHARD_CACHE (directory, default ~/.cache/generalist/shards) and
GENERALIST_SHARD_CACHE_GB (default 20; 0: ranged reads).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import uuid
from pathlib import Path
from typing import BinaryIO

from generalist.errors import ConfigError, DataError
from generalist.shards.index import ShardIndex, index_shard
from generalist.shards.manifest import ShardInfo
from generalist.shards.storage import BLOCK, RemotePath

DEFAULT_DIR = Path("~/.cache/generalist/shards")
DEFAULT_GB = 20.0


class ShardCache:
    """Where remote shards are read from: a bounded local cache, or ranged reads (max_bytes=0)."""

    def __init__(self, directory: Path | str | None = None, max_bytes: int | None = None) -> None:
        env_dir = os.environ.get("GENERALIST_SHARD_CACHE")
        self.directory = Path(directory or env_dir or DEFAULT_DIR).expanduser()
        if max_bytes is None:
            text = os.environ.get("GENERALIST_SHARD_CACHE_GB", str(DEFAULT_GB))
            try:
                max_bytes = int(float(text) * (1 << 30))
            except ValueError:
                raise ConfigError(f"GENERALIST_SHARD_CACHE_GB={text!r} is not a number") from None
        if max_bytes < 0:
            raise ConfigError(f"shard cache size must be >= 0 bytes, got {max_bytes}")
        self.max_bytes = max_bytes
        # what this process did (tests and benchmarks read them)
        self.fetches = self.evictions = self.peak_bytes = 0

    def open(self, shard: ShardInfo) -> BinaryIO:
        """The shard opened for reading (local, its cached copy, or the remote file)."""
        if not isinstance(shard.path, RemotePath):
            return _mapped(shard.path)
        if self.max_bytes == 0:
            return shard.path.open("rb")
        return _mapped(self.fetch(shard))

    def index(self, shard: ShardInfo) -> ShardIndex:
        """The shard's tar index; messages name the shard itself (its URL), not the copy."""
        if not isinstance(shard.path, RemotePath):
            return index_shard(shard.path, shard.count)
        with self.open(shard) as file:
            return index_shard(shard.path, shard.count, file, shard.bytes)

    def fetch(self, shard: ShardInfo) -> Path:
        """The local copy of a remote shard, downloaded (and checked) if it is not there."""
        assert isinstance(shard.path, RemotePath)
        copy = self.directory / f"{shard.sha256}.tar"
        if copy.is_file():
            os.utime(copy)  # recently used: evicted last
            return copy
        size = shard.bytes if shard.bytes is not None else shard.path.size()
        if size > self.max_bytes:
            raise ConfigError(
                f"shard {shard.path} is {size} bytes, more than the whole shard cache "
                f"({self.max_bytes} bytes); raise GENERALIST_SHARD_CACHE_GB, or set it to 0 "
                f"for ranged reads"
            )
        self.directory.mkdir(parents=True, exist_ok=True)
        self._make_room(size)
        part = self.directory / f".{shard.sha256}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part"
        digest = hashlib.sha256()
        try:
            with shard.path.open("rb", block_size=BLOCK) as remote, open(part, "wb") as local:
                for block in iter(lambda: remote.read(BLOCK), b""):
                    digest.update(block)
                    local.write(block)
            got = part.stat().st_size
            if digest.hexdigest() != shard.sha256:
                raise DataError(
                    f"shard {shard.path}: the {got} bytes fetched have sha256 "
                    f"{digest.hexdigest()[:12]}..., its manifest says {shard.sha256[:12]}...; "
                    f"the remote copy changed or is damaged: re-run `generalist shard` (or "
                    f"re-upload it)"
                )
            os.replace(part, copy)
        except OSError as err:
            raise DataError(f"cannot fetch shard {shard.path} ({err})") from None
        finally:
            part.unlink(missing_ok=True)
        self.fetches += 1
        self.peak_bytes = max(self.peak_bytes, self.used_bytes())
        return copy

    def used_bytes(self) -> int:
        """Bytes of the cached copies (and downloads in progress) now in the directory."""
        return sum(size for _, size, _ in self._entries(parts=True))

    def _entries(self, parts: bool = False) -> list[tuple[float, int, Path]]:
        found = []
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        for entry in entries:
            if entry.name.endswith(".tar") or (parts and entry.name.endswith(".part")):
                try:
                    stat = entry.stat()
                except FileNotFoundError:  # removed by another process meanwhile
                    continue
                found.append((stat.st_mtime, stat.st_size, Path(entry.path)))
        return sorted(found)

    def _make_room(self, size: int) -> None:
        """Remove the least recently used copies until `size` more bytes fit (a copy another
        process still has open stays readable to it: POSIX keeps unlinked open files), and
        downloads left by killed processes."""
        for _, _, path in self._entries(parts=True):
            pid = path.name.split(".")[2] if path.name.endswith(".part") else ""
            if pid.isdigit() and not _alive(int(pid)):
                path.unlink(missing_ok=True)
        used = self.used_bytes()
        for _, bytes_, path in self._entries():
            if used + size <= self.max_bytes:
                return
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            used -= bytes_
            self.evictions += 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def _mapped(path: Path) -> BinaryIO:
    """A local file memory-mapped (seek and read without a system call each: the page cache
    serves them), or opened plainly where it cannot be mapped (empty files)."""
    file = open(path, "rb")  # noqa: SIM115 (closed here or by the caller)
    try:
        mapped = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
    except (ValueError, OSError):
        return file
    file.close()  # the mapping stays valid without its descriptor
    return mapped  # type: ignore[return-value]
