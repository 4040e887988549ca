"""What every loader in `generalist bench stream` shares: the per-example work, the measurement
(examples/s, rate errors, resume time) and the little conversions the peers' formats need.

A loader is a `Pipeline`: `open()` builds it from its converted data, `batches(loader)` yields
lists of formatted Examples forever (epochs roll over), `state(loader)` is its resumable state
after what was consumed, `restore(state)` builds a new loader from that state. The per-example
work is the same for all: the sample's JSON decoded into a Record (images kept encoded) and
`format_example` with the same exemplar pools.
"""

from __future__ import annotations

import json
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from generalist.catalog.exemplars import ExemplarPool, format_example
from generalist.catalog.records import Example, Record
from generalist.catalog.task import TASKS

BATCH = 32  # every loader yields batches of this many examples
Format = Callable[[str, Record], Example]


def make_format(pools: dict[str, ExemplarPool | None], seed: int) -> Format:
    """The per-example work every loader does after reading a sample."""

    def fmt(task: str, record: Record) -> Example:
        return format_example(TASKS.get(task), record, pools[task], seed=seed, train=True)

    return fmt


def record_of(doc: dict[str, Any], images: Sequence[bytes]) -> Record:
    """The same decoding as generalist.shards.reader.decode_sample, for the peers."""
    return Record(str(doc["id"]), str(doc["split"]), tuple(images), doc["fields"], doc["meta"])


def record_json(record: Record) -> str:
    """A record's JSON member, as our shards store it (for the peers' own formats)."""
    doc = {"id": record.id, "split": record.split, "fields": record.fields, "meta": record.meta}
    return json.dumps(doc, ensure_ascii=False)


def pack_images(images: Sequence[bytes]) -> bytes:
    """Encoded images as one byte string (length-prefixed): formats with fixed columns, and no
    pickles (the peers could store a list only by pickling it)."""
    return b"".join(struct.pack("<I", len(image)) + image for image in images)


def unpack_images(blob: bytes) -> list[bytes]:
    images, at = [], 0
    while at < len(blob):
        (size,) = struct.unpack_from("<I", blob, at)
        images.append(blob[at + 4 : at + 4 + size])
        at += 4 + size
    return images


class Pipeline:
    """One loader under test (see the module docstring); subclasses fill in open and batches,
    and state / restore where the loader does not keep the torch convention (state_dict /
    load_state_dict), as Energon's does not."""

    name = "pipeline"
    resumable = True

    def open(self) -> Any:
        raise NotImplementedError

    def batches(self, loader: Any) -> Iterator[list[Example]]:
        raise NotImplementedError

    def state(self, loader: Any) -> Any:
        return loader.state_dict()

    def restore(self, state: Any) -> Any:
        loader = self.open()
        loader.load_state_dict(state)
        return loader


@dataclass
class Measured:
    """What one loader did: its task sequence, timings, and its resume."""

    name: str
    tasks: list[str] = field(default_factory=list)
    seconds: float = 0.0
    build_s: float = 0.0
    resume_at: int | None = None
    resume_s: float | None = None
    resume_exact: bool | None = None
    note: str = ""

    def summary(self, rates: dict[str, float], at: Sequence[int]) -> dict[str, Any]:
        """examples/s, the rate error (in examples, the worst task) after each of `at` and over
        every prefix that ends a batch, and the resume figures."""
        out: dict[str, Any] = {
            "examples_per_s": round(len(self.tasks) / self.seconds, 1) if self.seconds else 0.0,
            "build_s": round(self.build_s, 3),
        }
        for n in at:
            key = f"rate_error_at_{n // 1000}k" if n % 1000 == 0 else f"rate_error_at_{n}"
            out[key] = (
                round(count_error(self.tasks[:n], rates), 2) if n <= len(self.tasks) else None
            )
        out["max_prefix_error"] = round(prefix_error(self.tasks, rates, BATCH), 3)
        out["resume_at"] = self.resume_at
        out["resume_s"] = None if self.resume_s is None else round(self.resume_s, 3)
        out["resume_exact"] = self.resume_exact
        if self.note:
            out["note"] = self.note
        return out


def count_error(tasks: Sequence[str], rates: dict[str, float]) -> float:
    """max over tasks of |count - rate x n| after the n examples of `tasks`."""
    n = len(tasks)
    return max(abs(sum(1 for t in tasks if t == task) - rate * n) for task, rate in rates.items())


def prefix_error(tasks: Sequence[str], rates: dict[str, float], every: int = 1) -> float:
    """max over tasks and every prefix of `every` x j examples of |count - rate x position|
    (every = the batch: the stratified schedule deals each batch in a random order, so its
    one-example guarantee holds at batch ends)."""
    counts = dict.fromkeys(rates, 0)
    worst = 0.0
    for n, task in enumerate(tasks, 1):
        counts[task] += 1
        if n % every == 0:
            worst = max(worst, max(abs(counts[t] - r * n) for t, r in rates.items()))
    return worst


def measure(pipeline: Pipeline, n: int, resume_at: int) -> Measured:
    """Time `n` examples, save the state at the first batch boundary >= resume_at, then time
    building a new loader from that state and reading its first batch."""
    result = Measured(pipeline.name)
    started = time.perf_counter()
    loader = pipeline.open()
    result.build_s = time.perf_counter() - started
    stream = pipeline.batches(loader)
    ids: list[str] = []
    state = None
    started = time.perf_counter()
    while len(ids) < n:
        batch = next(stream)
        ids += [e.id for e in batch]
        result.tasks += [e.task for e in batch]
        if state is None and len(ids) >= resume_at and pipeline.resumable:
            paused = time.perf_counter()
            state, result.resume_at = pipeline.state(loader), len(ids)
            started += time.perf_counter() - paused  # saving is not reading
    result.seconds = time.perf_counter() - started
    if state is not None:
        started = time.perf_counter()
        first = next(pipeline.batches(pipeline.restore(state)))
        result.resume_s = time.perf_counter() - started
        at = result.resume_at or 0
        result.resume_exact = [e.id for e in first] == ids[at : at + len(first)]
    elif not pipeline.resumable:
        result.note = "no resumable state"
    result.tasks, ids = result.tasks[:n], []
    return result
