"""The shard format: layout, manifest and checksums (reading: shards.reader, shards.index;
writing: shards.writer).

Layout: `<root>/<dataset>/<split>-000000.tar ...` plus `<root>/<dataset>/manifest.json`, written
last and atomically. A dataset directory without manifest.json is incomplete and never read.

Each sample of a shard: `__key__` = f"{index:09d}" (the record's position in its split),
`<key>.json` = {"id", "split", "fields", "meta"} (UTF-8 JSON) and one member per image,
`<key>.0.png`, `<key>.1.jpg`, ... (encoded bytes). Nothing is pickled and nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from generalist.catalog.records import Record
from generalist.errors import DataError
from generalist.shards.reader import iter_shard
from generalist.shards.storage import RemotePath, ShardPath, as_root, missing, open_binary

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class ShardInfo:
    """One shard file of a split, as the manifest lists it (a local Path or a RemotePath)."""

    path: ShardPath
    count: int
    sha256: str
    bytes: int | None = None


def dataset_dir(root: ShardPath | str, dataset: str) -> ShardPath:
    """<root>/<dataset>: where one dataset's shards and manifest live (root may be a URL)."""
    return as_root(root) / dataset


def shard_name(split: str, index: int) -> str:
    """'train-000003.tar': the file name of a split's `index`-th shard."""
    return f"{split}-{index:06d}.tar"


def sample_key(index: int) -> str:
    """The tar key of the `index`-th record of a split (zero-padded so names sort)."""
    return f"{index:09d}"


def load_manifest(root: ShardPath | str, dataset: str) -> dict[str, Any]:
    """The manifest of a complete dataset; DataError naming the path if missing or unreadable."""
    directory = dataset_dir(root, dataset)
    path = directory / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")  # one request on a remote root
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        state = "is incomplete (a run was interrupted or is still writing)"
        if not directory.is_dir():
            state = "does not exist"
        raise DataError(
            f"dataset {dataset!r} at {directory} {state}: no {MANIFEST}; "
            f"write it with `generalist shard {dataset} --out {root}`"
        ) from None
    except OSError as err:
        raise DataError(f"cannot read {path} ({type(err).__name__}: {err})") from None
    try:
        manifest = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{path} is not valid JSON ({err}); re-run `generalist shard`") from None
    if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
        raise DataError(
            f"{path}: format_version {manifest.get('format_version')!r} is not "
            f"{FORMAT_VERSION}; re-write the dataset with this version of `generalist shard`"
        )
    return manifest


def split_shards(root: ShardPath | str, dataset: str, split: str) -> list[ShardInfo]:
    """The shards of one split in order; DataError if the split was not written."""
    manifest = load_manifest(root, dataset)
    splits = manifest["splits"]
    if split not in splits:
        raise DataError(
            f"dataset {dataset!r} at {dataset_dir(root, dataset)} has no split {split!r}; "
            f"it has {sorted(splits)}"
        )
    directory = dataset_dir(root, dataset)
    return [
        ShardInfo(directory / s["path"], int(s["count"]), str(s["sha256"]), s.get("bytes"))
        for s in splits[split]["shards"]
    ]


def read_records(root: ShardPath | str, dataset: str, split: str) -> Iterator[Record]:
    """Every record of one split, shard after shard, in the order they were written."""
    for shard in split_shards(root, dataset, split):
        yield from iter_shard(shard.path, count=shard.count)


def file_sha256(path: ShardPath) -> str:
    """The sha256 hex digest of a (local or remote) file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open_binary(path) as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_dataset(root: ShardPath | str, dataset: str, splits: list[str] | None = None) -> None:
    """Check every shard's sha256 (of `splits`, default all) against the manifest; DataError
    naming the first that differs. A remote root is only checked for missing shards (one
    listing): reading it all here would download the dataset; each shard's sha256 is checked
    when it is fetched (generalist.shards.cache)."""
    manifest = load_manifest(root, dataset)
    for split in manifest["splits"] if splits is None else splits:
        shards = split_shards(root, dataset, split)
        for path in missing(s.path for s in shards)[:1]:
            raise DataError(
                f"dataset {dataset!r}: shard {path} listed in the manifest is missing; "
                f"re-run `generalist shard {dataset}`"
            )
        for shard in shards:
            if isinstance(shard.path, RemotePath):
                continue
            actual = file_sha256(shard.path)
            if actual != shard.sha256:
                raise DataError(
                    f"dataset {dataset!r}: shard {shard.path} has sha256 {actual[:12]}..., the "
                    f"manifest says {shard.sha256[:12]}...; it changed after writing; "
                    f"re-run `generalist shard {dataset}`"
                )


def summary_lines(manifest: dict[str, Any]) -> list[str]:
    """One line per split of a written dataset: records, shards, megabytes, skipped."""
    lines = []
    for split, info in manifest["splits"].items():
        size = sum(s["bytes"] for s in info["shards"]) / 1e6
        lines.append(
            f"{manifest['dataset']}/{split}: {info['count']} records in "
            f"{len(info['shards'])} shard(s), {size:.1f} MB, "
            f"skipped {manifest['skipped'].get(split, 0)}"
        )
    return lines
