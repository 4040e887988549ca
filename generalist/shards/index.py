"""Random access into a shard: its tar headers scanned once into a ShardIndex (where each
sample's members lie), then any sample read by seeking (read_indexed). Used by the shuffling
task reader, which reads samples out of written order."""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from generalist.catalog.records import Record
from generalist.errors import DataError
from generalist.shards.reader import decode_sample, member_key


@dataclass(frozen=True)
class ShardIndex:
    """Where each sample's members lie in one shard (from its tar headers), for random access.

    `samples[i]` = (key, ((suffix, data offset, size), ...)) of the i-th sample in written
    order; `problem` says why the samples after `len(samples)` are missing (a truncated tar,
    fewer samples than the manifest's count), or is None.
    """

    path: Path
    samples: tuple[tuple[str, tuple[tuple[str, int, int], ...]], ...]
    problem: str | None = None


def index_shard(path: Path | str, count: int | None = None) -> ShardIndex:
    """Scan a shard's tar headers once (no data read, nothing decoded) into a ShardIndex.

    A truncated tar keeps the samples before the damage (the sample being read when it was
    found is dropped: its members may be incomplete). `count` (the manifest's): fewer samples
    is a `problem`; more means the shard changed after writing: DataError.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"shard {path} does not exist; re-run `generalist shard`")
    size = path.stat().st_size
    groups: list[tuple[str, list[tuple[str, int, int]]]] = []
    problem = None
    try:
        with tarfile.open(path, mode="r:") as tar:
            while True:
                info = tar.next()
                if info is None:
                    break
                if not info.isfile():
                    continue
                key, suffix = member_key(info.name)
                if not groups or groups[-1][0] != key:
                    groups.append((key, []))
                groups[-1][1].append((suffix, info.offset_data, info.size))
    except (tarfile.TarError, EOFError, OSError) as err:
        where = f"after sample {groups[-2][0]}" if len(groups) > 1 else "at its start"
        problem = f"shard {path} is truncated or corrupt {where} ({err})"
        groups = groups[:-1]
    # tarfile finds a cut in a member's data only at the next header: check the last ones
    while groups and any(offset + n > size for _, offset, n in groups[-1][1]):
        problem = problem or f"shard {path} is truncated in sample {groups[-1][0]}"
        groups.pop()
    if count is not None and len(groups) > count:
        raise DataError(
            f"shard {path} has {len(groups)} samples, its manifest says {count}: it changed "
            f"after writing; re-run `generalist shard`"
        )
    if count is not None and len(groups) < count and problem is None:
        problem = f"shard {path} is truncated: {len(groups)} of its {count} samples are there"
    samples = tuple((key, tuple(members)) for key, members in groups)
    return ShardIndex(path, samples, problem)


def read_indexed(file: BinaryIO, index: ShardIndex, position: int, count: int) -> Record:
    """Sample `position` (written order) of an indexed shard, read by seeking in `file`.

    `count` is the manifest's sample count. A position the index lacks (truncated shard), a
    short read or a malformed sample raises DataError naming the shard (and key).
    """
    if not 0 <= position < count:
        raise DataError(f"shard {index.path}: no sample at position {position} (of {count})")
    if position >= len(index.samples):
        raise DataError(f"{index.problem} (sample at position {position} is lost)")
    key, members = index.samples[position]
    data: dict[str, bytes] = {}
    for suffix, offset, size in members:
        file.seek(offset)
        blob = file.read(size)
        if len(blob) != size:
            raise DataError(f"shard {index.path} is truncated in sample {key} (member {suffix})")
        data[suffix] = blob
    return decode_sample(index.path, key, data)
