"""Seeded exemplar sampling: from the train split only, never the example itself,
reproducible from (seed, task, example id) whatever order examples are visited in."""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import replace

from generalist.catalog.records import Example, Record
from generalist.catalog.task import Task
from generalist.errors import DataError
from generalist.seeds import stable_seed

DEFAULT_POOL_SIZE = 2000


class ExemplarPool:
    """Train-split records of one task's dataset that exemplars are drawn from.

    Text-only exemplars keep no image bytes, so a pool of thousands of records stays small.
    """

    def __init__(self, task: Task, records: Iterable[Record], limit: int = DEFAULT_POOL_SIZE):
        self.task = task
        kept: list[Record] = []
        for record in records:
            if record.split != "train":
                raise DataError(
                    f"exemplar pool for task {task.name!r}: record {record.id!r} is from split "
                    f"{record.split!r}; exemplars come from the train split only"
                )
            if not task.exemplar_images:
                # The prompt needs only the image count of a text-only exemplar.
                record = replace(record, images=(b"",) * len(record.images))
            kept.append(record)
            if len(kept) >= limit:
                break
        self.records: Sequence[Record] = kept
        self._ids = frozenset(r.id for r in kept)  # draw() runs per example: O(1) membership

    def draw(self, record_id: str, seed: int) -> list[Record]:
        """The task's `shots` exemplars for example `record_id`: same inputs, same exemplars."""
        shots = self.task.shots
        if shots == 0:
            return []
        others = len(self.records) - (record_id in self._ids)
        if others < shots:
            raise DataError(
                f"task {self.task.name!r} asks for {shots} exemplar(s) but its train split has "
                f"{others} record(s) other than {record_id!r}; lower `shots` or add train data"
            )
        rng = random.Random(stable_seed(seed, self.task.name, record_id))
        picks = rng.sample(range(len(self.records)), min(len(self.records), shots + 1))
        return [self.records[i] for i in picks if self.records[i].id != record_id][:shots]


def format_example(
    task: Task,
    record: Record,
    pool: ExemplarPool | None,
    seed: int,
    train: bool,
    template: int | None = None,
) -> Example:
    """The one way records become Examples (training stream, evaluation and `render` agree).

    Training samples an instruction paraphrase from (seed, task, id); evaluation takes
    `template` (default the first). Exemplars come from `pool` by (seed, id).
    """
    rng = random.Random(stable_seed(seed, "template", task.name, record.id)) if train else None
    exemplars = pool.draw(record.id, seed) if pool is not None and task.shots else []
    return task.format(record, rng=rng, exemplars=exemplars, template=template)
