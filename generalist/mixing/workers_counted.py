"""Bad samples met inside DataLoader workers, counted in the main process.

A worker runs its own copy of the stream: what it counts (`stream.skipped`) dies with the copy.
So StreamLoader runs workers over `Counted(stream)`, which yields each example with the bad
samples met since the one before, and a collate_fn that hands (skipped, batch) back; the main
process adds `skipped` as each batch arrives, so the count covers what the loop consumed
(batches prefetched but never received are not counted), from every worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

from torch.utils.data import IterableDataset

from generalist.catalog.records import Example


class Counted(IterableDataset):
    """(example, bad samples met since the previous example) from the stream it wraps."""

    def __init__(self, stream: IterableDataset) -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[tuple[Example, int]]:
        seen = self.stream.skipped
        for example in self.stream:
            yield example, self.stream.skipped - seen
            seen = self.stream.skipped


class CountedCollate:
    """collate_fn over (example, skipped) pairs -> (skipped in the batch, collate(examples));
    a class, not a closure, so that spawned workers can unpickle it."""

    def __init__(self, collate: Callable) -> None:
        self.collate = collate

    def __call__(self, items: list[tuple[Example, int]]) -> tuple[int, Any]:
        return sum(n for _, n in items), self.collate([example for example, _ in items])


def counted(stream: IterableDataset, kwargs: Mapping[str, Any]) -> tuple[Counted, dict[str, Any]]:
    """The dataset and DataLoader kwargs that bring each worker's count back with its batches."""
    return Counted(stream), {**kwargs, "collate_fn": CountedCollate(kwargs["collate_fn"])}
