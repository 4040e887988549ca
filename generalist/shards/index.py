"""Random access into a shard: its tar headers scanned once into a ShardIndex (where each
sample's members lie), then any sample read by seeking (read_indexed): a local file, a cached
copy of a remote one, or a remote file by ranged reads. Used by the shuffling task reader,
which reads samples out of written order."""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from typing import BinaryIO

from generalist.catalog.records import Record
from generalist.errors import DataError
from generalist.shards.reader import decode_checked, image_members, member_key, tar_entries
from generalist.shards.storage import ShardPath, as_root, open_binary

Plan = tuple[tuple[int, int], tuple[tuple[str, str, int, int], ...]]


def plan_sample(path: ShardPath, key: str, members: tuple[tuple[str, int, int], ...]) -> Plan | str:
    """Where a sample's JSON and images lie, its member names checked; or the error message."""
    where = {suffix: (offset, size) for suffix, offset, size in members}
    if "json" not in where:
        return f"shard {path} sample {key}: missing member {key}.json"
    try:
        images = image_members(path, key, where)
    except DataError as err:
        return str(err)
    return where["json"], tuple((s, f, *where[s]) for s, f in images)


@dataclass(frozen=True)
class ShardIndex:
    """Where each sample's members lie in one shard (from its tar headers), for random access.

    `samples[i]` = (key, ((suffix, data offset, size), ...)) of the i-th sample in written
    order; `problem` says why the samples after `len(samples)` are missing (a truncated tar,
    fewer samples than the manifest's count), or is None. `plans[i]`: its member names checked
    once, here: ((JSON offset, size), ((suffix, format, offset, size) per image, in order)), or
    the error that reading the sample raises.
    """

    path: ShardPath
    samples: tuple[tuple[str, tuple[tuple[str, int, int], ...]], ...]
    problem: str | None = None
    plans: tuple[Plan | str, ...] = ()


def index_shard(
    path: ShardPath | str,
    count: int | None = None,
    file: BinaryIO | None = None,
    size: int | None = None,
) -> ShardIndex:
    """Scan a shard's tar headers once (no data read, nothing decoded) into a ShardIndex.

    A truncated tar keeps the samples before the damage (the sample being read when it was
    found is dropped: its members may be incomplete). `count` (the manifest's): fewer samples
    is a `problem`; more means the shard changed after writing: DataError. `file` (and its
    `size`): read the headers from it instead, e.g. a remote file by ranged reads, or a cached
    copy, while messages name `path`.
    """
    path = as_root(path)
    if file is None:
        if not path.is_file():
            raise DataError(f"shard {path} does not exist; re-run `generalist shard`")
        with open_binary(path) as opened:
            return index_shard(path, count, opened)
    size = file.seek(0, 2) if size is None else size
    groups: list[tuple[str, list[tuple[str, int, int]]]] = []
    problem = None
    try:
        for name, offset, length in tar_entries(file):
            _add(groups, name, offset, length)
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
    plans = tuple(plan_sample(path, key, members) for key, members in samples)
    return ShardIndex(path, samples, problem, plans)


def _add(groups: list, name: str, offset: int, size: int) -> None:
    key, suffix = member_key(name)
    if not groups or groups[-1][0] != key:
        groups.append((key, []))
    groups[-1][1].append((suffix, offset, size))


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
    # one read spans the sample's members (they are adjacent): one request on a remote file
    first = members[0][1]
    file.seek(first)
    span = file.read(members[-1][1] + members[-1][2] - first)
    if len(span) < members[-1][1] + members[-1][2] - first:
        cut = next(s for s, offset, size in members if offset + size - first > len(span))
        raise DataError(f"shard {index.path} is truncated in sample {key} (member {cut})")
    plan = index.plans[position] if index.plans else plan_sample(index.path, key, members)
    if isinstance(plan, str):
        raise DataError(plan)
    (at, size), images = plan
    raw = span[at - first : at - first + size]
    parts = [(s, f, span[a - first : a - first + n]) for s, f, a, n in images]
    return decode_checked(index.path, key, raw, parts)
