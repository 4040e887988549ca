"""One task's records in an endless, seeded order, read by position from any reader.

Order of an epoch (`TaskOrder`): the split's shards in an order reshuffled by (seed, task,
epoch), and (training streams, unless `shuffle_within_shard=False`) each shard's samples in a
permutation drawn from (seed, task, epoch, shard), so an image's many questions do not arrive
together. Epochs follow each other: position k of the task's sequence is position k mod N of
epoch k // N (N = the split's records). Evaluation streams keep the written order.

Who reads what: the stream reads, for the k-th example of a task in the global sequence, the
record at position k (generalist.mixing.schedule's `occurrences`). Whichever rank and
dataloader worker that example is dealt to reads it, so readers take turns over the records:
an epoch of the global sequence reads every record exactly once, whatever the number of ranks
and workers (also more readers than records), no reader runs ahead of another, and changing
the world size changes nothing about which record comes next.

Random access: each shard's tar headers are scanned once into a `shards.ShardIndex` (member
offsets; cached per shard, a few shards at a time) and samples are read by seeking; a reader
keeps its current shard open, and consecutive positions mostly sit in the same shard. Remote
shards go through a `ShardCache` (fetched whole, sha256-checked, into a bounded local cache; or
ranged reads): a reader fetches a shard when it first needs a record from it.

Bad samples: with skip_bad=False the shard reader's DataError (naming shard and key) propagates.
With skip_bad=True a bad position yields `None` (train streams put a substitute record there, so
positions, and therefore exact resume, are unaffected) and `on_bad(message)` is called.
"""

from __future__ import annotations

import bisect
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from generalist.catalog.records import Record
from generalist.errors import DataError
from generalist.seeds import stable_seed
from generalist.shards.cache import ShardCache
from generalist.shards.index import ShardIndex, read_indexed
from generalist.shards.manifest import ShardInfo

INDEX_CACHE = 16  # shard indexes and permutations kept per task and process


@dataclass(frozen=True)
class Position:
    """Where position k of a task's sequence lies (for state_dict, tests and the bench)."""

    epoch: int
    shard: int  # index of the shard in the manifest's list
    offset: int  # position within that shard's order for the epoch
    sample: int  # the sample read there (written order)


class TaskOrder:
    """The endless record order of one task's split: position k -> (epoch, shard, sample)."""

    def __init__(
        self,
        task: str,
        shards: Sequence[ShardInfo],
        seed: int,
        shuffle: bool = True,
        shuffle_within_shard: bool | None = None,
        cache: ShardCache | None = None,
    ) -> None:
        self.task = task
        self.cache = cache or ShardCache()  # local shards pass through it untouched
        self.shards = [s for s in shards if s.count > 0]
        self.seed, self.shuffle = seed, shuffle
        self.shuffle_within_shard = (
            shuffle if shuffle_within_shard is None else shuffle_within_shard
        )
        self.total = sum(s.count for s in self.shards)
        self._perms: OrderedDict[tuple[int, int], list[int]] = OrderedDict()
        self._indexes: OrderedDict[int, ShardIndex] = OrderedDict()
        self._epoch: tuple[int, list[int], list[int]] = (-1, [], [])  # epoch, order, starts

    def order(self, epoch: int) -> list[int]:
        """Shard indices in reading order for `epoch`."""
        order = list(range(len(self.shards)))
        if self.shuffle:
            random.Random(stable_seed(self.seed, "shards", self.task, epoch)).shuffle(order)
        return order

    def permutation(self, epoch: int, shard: int) -> list[int] | None:
        """Sample order of shard `shard` (index) in `epoch`; None: written order."""
        if not self.shuffle_within_shard:
            return None
        key = (epoch, shard)
        if key not in self._perms:
            info = self.shards[shard]
            perm = list(range(info.count))
            random.Random(
                stable_seed(self.seed, "samples", self.task, epoch, info.path.name)
            ).shuffle(perm)
            self._perms[key] = perm
            if len(self._perms) > INDEX_CACHE:
                self._perms.popitem(last=False)
        self._perms.move_to_end(key)
        return self._perms[key]

    def locate(self, k: int) -> Position:
        """Where position `k` (0-based, over all epochs) of the sequence lies: arithmetic."""
        epoch, at = divmod(k, self.total)
        if self._epoch[0] != epoch:
            order = self.order(epoch)
            starts, start = [], 0
            for shard in order:
                starts.append(start)
                start += self.shards[shard].count
            self._epoch = (epoch, order, starts)
        _, order, starts = self._epoch
        n = bisect.bisect_right(starts, at) - 1
        shard, offset = order[n], at - starts[n]
        perm = self.permutation(epoch, shard)
        return Position(epoch, shard, offset, offset if perm is None else perm[offset])

    def index(self, shard: int) -> ShardIndex:
        """The tar index of shard `shard` (scanned once, then cached)."""
        if shard not in self._indexes:
            self._indexes[shard] = self.cache.index(self.shards[shard])
            if len(self._indexes) > INDEX_CACHE:
                self._indexes.popitem(last=False)
        self._indexes.move_to_end(shard)
        return self._indexes[shard]


class Reader:
    """Reads positions of one task's sequence, keeping the current shard open between reads."""

    def __init__(
        self,
        order: TaskOrder,
        skip_bad: bool = False,
        on_bad: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.order, self.skip_bad, self.on_bad = order, skip_bad, on_bad
        self._open: tuple[int, BinaryIO | None] = (-1, None)

    def read(self, k: int) -> tuple[Position, Record | None]:
        """The record at position `k`, or None where the sample is bad (skip_bad)."""
        where = self.order.locate(k)
        info = self.order.shards[where.shard]
        try:
            file = self._file(where.shard)
            index = self.order.index(where.shard)
        except (DataError, OSError) as err:
            if not self.skip_bad:
                raise DataError(str(err)) from None
            self.on_bad(f"shard {info.path} is unreadable ({err})")
            return where, None
        try:
            return where, read_indexed(file, index, where.sample, info.count)
        except DataError as err:
            if not self.skip_bad:
                raise
            self.on_bad(str(err))
            return where, None

    def _file(self, shard: int) -> BinaryIO:
        if self._open[0] != shard:
            self.close()
            self._open = (shard, self.order.cache.open(self.order.shards[shard]))
        file = self._open[1]
        assert file is not None
        return file

    def close(self) -> None:
        """Close the open shard (a reader reopens what it needs on the next read)."""
        if self._open[1] is not None:
            self._open[1].close()
        self._open = (-1, None)
