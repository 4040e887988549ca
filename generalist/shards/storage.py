"""Where a shard root lives: a local directory (a plain `pathlib.Path`, read exactly as before) or
a URL that fsspec opens (s3://, gs://, https://, ...), as a `RemotePath` with the few `Path`
methods the shard code uses (`/`, name, is_file, is_dir, read_text, open).

    as_root("shards/")                  -> Path("shards")
    as_root("s3://bucket/shards")       -> RemotePath("s3://bucket/shards")

Credentials and endpoints come from fsspec's usual places: the backend's own (AWS_* variables,
~/.aws, gcloud), or fsspec's configuration (e.g. FSSPEC_S3_ENDPOINT_URL=http://host:9000 for an
S3-compatible server). s3:// needs `s3fs`, gs:// needs `gcsfs` (the `remote` extra); http(s)://
works with fsspec alone. Reading a remote shard: generalist.shards.cache (whole shards fetched
into a bounded local cache, or ranged reads). Writing: `upload_dataset` (shards, then the
manifest last). Why not universal_pathlib: five methods do not justify another dependency.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from generalist.errors import DataError

BLOCK = 1 << 20  # 1 MiB: read-ahead of a remote file opened for ranged reads


def is_url(root: Path | str) -> bool:
    """True for a URL with a scheme (s3://, gs://, https://, ...); file:// counts as local."""
    text = str(root)
    return "://" in text and not text.startswith("file://")


@dataclass(frozen=True)
class RemotePath:
    """A file or directory under a URL; picklable (the filesystem is looked up per process)."""

    url: str

    def __truediv__(self, name: str) -> RemotePath:
        return RemotePath(self.url.rstrip("/") + "/" + name)

    def __str__(self) -> str:
        return self.url

    @property
    def name(self) -> str:
        return posixpath.basename(self.url.rstrip("/"))

    @property
    def parent(self) -> RemotePath:
        scheme, _, rest = self.url.partition("://")
        return RemotePath(f"{scheme}://{posixpath.dirname(rest.rstrip('/'))}")

    def filesystem(self) -> tuple[Any, str]:
        """(fsspec filesystem, its path for this URL); fsspec caches one per process."""
        import fsspec.core

        try:
            return fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as err:
            raise DataError(
                f"cannot open {self.url}: {err} (s3:// needs `pip install s3fs`, gs:// needs gcsfs)"
            ) from None

    def is_file(self) -> bool:
        fs, path = self.filesystem()
        try:
            return bool(fs.isfile(path))
        except OSError:
            return False

    def is_dir(self) -> bool:
        fs, path = self.filesystem()
        try:
            return bool(fs.isdir(path))
        except OSError:
            return False

    def size(self) -> int:
        fs, path = self.filesystem()
        return int(fs.size(path))

    def read_bytes(self) -> bytes:
        fs, path = self.filesystem()
        return bytes(fs.cat_file(path))

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def open(self, mode: str = "rb", block_size: int = BLOCK) -> BinaryIO:
        """A seekable file; each read past its read-ahead block is one ranged request."""
        fs, path = self.filesystem()
        return fs.open(path, mode, block_size=block_size, cache_type="readahead")

    def names(self) -> set[str] | None:
        """Names directly under this directory (one listing), or None if it cannot be listed."""
        fs, path = self.filesystem()
        try:
            return {posixpath.basename(str(p).rstrip("/")) for p in fs.ls(path, detail=False)}
        except (OSError, NotImplementedError, ValueError):
            return None


ShardPath = Path | RemotePath


def as_root(root: Path | str | RemotePath) -> ShardPath:
    """A shard root as a local Path or a RemotePath (see the module docstring)."""
    if isinstance(root, RemotePath | Path):
        return root
    if is_url(root):
        return RemotePath(str(root))
    return Path(str(root).removeprefix("file://"))


def open_binary(path: ShardPath) -> BinaryIO:
    """Open a local or remote file for reading (remote: seekable, ranged reads)."""
    return path.open("rb")


def missing(paths: Iterable[ShardPath]) -> list[ShardPath]:
    """Those of `paths` that do not exist; remote ones cost one listing per directory."""
    listed: dict[str, set[str] | None] = {}
    gone = []
    for path in paths:
        if isinstance(path, Path):
            if not path.is_file():
                gone.append(path)
            continue
        parent = str(path.parent)
        if parent not in listed:
            listed[parent] = path.parent.names()
        names = listed[parent]
        if (path.name not in names) if names else not path.is_file():
            gone.append(path)
    return gone


def upload_dataset(local: Path, remote: RemotePath, manifest: str) -> None:
    """Copy a complete local dataset directory to `remote`: the old manifest is removed first
    (readers then see an incomplete dataset, never a manifest over changing shards), then every
    other file, then the manifest last; files of an older copy that are not in this one go."""
    fs, base = remote.filesystem()
    target = base.rstrip("/")
    if fs.exists(f"{target}/{manifest}"):
        fs.rm_file(f"{target}/{manifest}")
    before = set()
    if fs.exists(target):
        before = {posixpath.basename(p.rstrip("/")) for p in fs.ls(target, detail=False)}
    files = sorted(p.name for p in local.iterdir() if p.is_file() and p.name != manifest)
    for name in files:
        fs.put_file(str(local / name), f"{target}/{name}")
    fs.put_file(str(local / manifest), f"{target}/{manifest}")
    for name in sorted(before - set(files) - {manifest}):
        fs.rm_file(f"{target}/{name}")
