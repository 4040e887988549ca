"""One task's records for one reader slot (rank x dataloader worker), epoch after epoch.

Layout of an epoch (`TaskShares`): the split's shards are put in an order reshuffled by
(seed, task, epoch), and (training streams, unless `shuffle_within_shard=False`) each shard's
samples are read in a permutation drawn from (seed, task, epoch, shard): position k of a shard
in an epoch is its sample perm[k], so an image's many questions no longer arrive together.
With at least as many shards as slots, slot s reads shards `order[s::slots]` whole; with fewer
shards than slots, the shards' positions are read in that order as one sequence and position i
goes to slot i % slots (striping over the permuted order). Either way the union over slots is
every record exactly once per epoch, and no two slots share a record. Evaluation streams keep
the written order.

Random access: each shard's tar headers are scanned once into a `shards.ShardIndex` (member
offsets; cached per shard, a few shards at a time) and samples are read by seeking. A slot
reads only its own samples, also when striped. Remote shards go through a `ShardCache`
(fetched whole, sha256-checked, into a bounded local cache; or ranged reads): a slot fetches
a shard only when it starts reading it.

A slot's reader position is one number, how many of the task's records it has consumed;
`locate` turns it into (epoch, shard, offset = position within the shard's epoch order) by
arithmetic on the manifest counts; the permutation is recomputed from its seed. Nothing
consumed is replayed.

Bad samples: with skip_bad=False the shard reader's DataError (naming shard and key) propagates.
With skip_bad=True the bad position yields `None` (train streams put a substitute record there,
so positions, and therefore exact resume, are unaffected) and `on_bad(message)` is called.
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from generalist.catalog.records import Record
from generalist.errors import DataError
from generalist.seeds import stable_seed
from generalist.shards.cache import ShardCache
from generalist.shards.index import ShardIndex, read_indexed
from generalist.shards.manifest import ShardInfo

INDEX_CACHE = 16  # shard indexes kept per task and process (a slot reads one shard at a time)


@dataclass(frozen=True)
class Segment:
    """Records `first, first + stride, ...` (`length` of them) of shard `shard` (index)."""

    shard: int
    first: int
    stride: int
    length: int


@dataclass(frozen=True)
class Position:
    """Where a slot's reader of one task stands (for state_dict and resume)."""

    epoch: int
    shard_pos: int  # index into this slot's segment list for the epoch
    shard: int  # index of the shard in the manifest's list
    offset: int  # position within that shard's order for the epoch (see permutation)


class TaskShares:
    """Which records of one task's split each of `slots` slots reads in each epoch."""

    def __init__(
        self,
        task: str,
        shards: Sequence[ShardInfo],
        seed: int,
        slots: int,
        shuffle: bool = True,
        shuffle_within_shard: bool | None = None,
        cache: ShardCache | None = None,
    ) -> None:
        self.task = task
        self.cache = cache or ShardCache()  # local shards pass through it untouched
        self.shards = [s for s in shards if s.count > 0]
        self.seed, self.slots, self.shuffle = seed, slots, shuffle
        self.shuffle_within_shard = (
            shuffle if shuffle_within_shard is None else shuffle_within_shard
        )
        self._perms: OrderedDict[tuple[int, int], list[int]] = OrderedDict()
        self._indexes: OrderedDict[int, ShardIndex] = OrderedDict()
        self.total = sum(s.count for s in self.shards)
        self.striped = len(self.shards) < slots
        self._cache: dict[tuple[int, int], list[Segment]] = {}
        # (slot, first_epoch) -> (epoch, records consumed before it): locate() starts there, so
        # a long run's frequent state_dict() calls do not walk every past epoch again.
        self._anchor: dict[tuple[int, int], tuple[int, int]] = {}

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

    def index(self, shard: int) -> ShardIndex:
        """The tar index of shard `shard` (scanned once, then cached)."""
        if shard not in self._indexes:
            self._indexes[shard] = self.cache.index(self.shards[shard])
            if len(self._indexes) > INDEX_CACHE:
                self._indexes.popitem(last=False)
        self._indexes.move_to_end(shard)
        return self._indexes[shard]

    def segments(self, epoch: int, slot: int) -> list[Segment]:
        """This slot's share of `epoch`, in reading order."""
        key = (epoch, slot)
        if key not in self._cache:
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[key] = self._segments(epoch, slot)
        return self._cache[key]

    def _segments(self, epoch: int, slot: int) -> list[Segment]:
        order = self.order(epoch)
        if not self.striped:
            return [Segment(i, 0, 1, self.shards[i].count) for i in order[slot :: self.slots]]
        out, start = [], 0  # start: index of the shard's first sample in the epoch sequence
        for i in order:
            count = self.shards[i].count
            first = (slot - start) % self.slots
            if first < count:
                out.append(Segment(i, first, self.slots, (count - first - 1) // self.slots + 1))
            start += count
        return out

    def epoch_length(self, epoch: int, slot: int) -> int:
        return sum(s.length for s in self.segments(epoch, slot))

    def locate(self, consumed: int, slot: int, first_epoch: int = 0) -> tuple[Position, int]:
        """(position, records left to skip in that segment) after `consumed` records."""
        epoch, before = self._anchor.get((slot, first_epoch), (first_epoch, 0))
        if before > consumed:
            epoch, before = first_epoch, 0
        consumed -= before
        while True:
            length = self.epoch_length(epoch, slot)
            if length == 0:
                raise DataError(
                    f"task {self.task!r}: reader slot {slot} of {self.slots} has no records "
                    f"(the split has {self.total}); use fewer ranks x dataloader workers"
                )
            if consumed < length:
                break
            consumed -= length
            before += length
            epoch += 1
        self._anchor[(slot, first_epoch)] = (epoch, before)
        for pos, seg in enumerate(self.segments(epoch, slot)):
            if consumed < seg.length:
                offset = seg.first + seg.stride * consumed
                return Position(epoch, pos, seg.shard, offset), consumed
            consumed -= seg.length
        raise AssertionError("unreachable: consumed < epoch length")


def segment_records(
    layout: TaskShares,
    epoch: int,
    seg: Segment,
    skip: int,
    skip_bad: bool,
    on_bad: Callable[[str], None],
) -> Iterator[Record | None]:
    """The records of `seg` (in `epoch`) from its `skip`-th on; None where a sample is bad."""
    if skip >= seg.length:
        return
    shard = layout.shards[seg.shard]
    try:
        index = layout.index(seg.shard)
        file = layout.cache.open(shard)  # local, a cached copy, or ranged reads (remote)
    except (DataError, OSError) as err:
        if not skip_bad:
            raise DataError(str(err)) from None
        for _ in range(skip, seg.length):  # the whole shard is unreadable: every sample bad
            on_bad(f"shard {shard.path} is unreadable ({err})")
            yield None
        return
    perm = layout.permutation(epoch, seg.shard)  # looked up once per segment, not per sample
    first, stride, count = seg.first, seg.stride, shard.count
    with file:
        for k in range(skip, seg.length):
            at = first + stride * k
            try:
                record = read_indexed(file, index, at if perm is None else perm[at], count)
            except DataError as err:
                if not skip_bad:
                    raise
                on_bad(str(err))
                record = None
            yield record


def slot_records(
    layout: TaskShares,
    slot: int,
    consumed: int,
    first_epoch: int = 0,
    skip_bad: bool = False,
    on_bad: Callable[[str], None] = lambda message: None,
    epochs: int | None = None,
) -> Iterator[tuple[int, int, Record | None]]:
    """(epoch, index within epoch, record or None) for `slot` from its `consumed`-th record.

    Runs forever (a task that runs out starts its next epoch on its own) unless `epochs` limits
    it. The index within the epoch names a bad position for the caller's substitute.
    """
    position, skip = layout.locate(consumed, slot, first_epoch)
    epoch, seg_pos = position.epoch, position.shard_pos
    index = sum(s.length for s in layout.segments(epoch, slot)[:seg_pos]) + skip
    while epochs is None or epoch < first_epoch + epochs:
        segments = layout.segments(epoch, slot)
        for seg in segments[seg_pos:]:
            for record in segment_records(layout, epoch, seg, skip, skip_bad, on_bad):
                yield epoch, index, record
                index += 1
            skip = 0
        epoch, seg_pos, index = epoch + 1, 0, 0
