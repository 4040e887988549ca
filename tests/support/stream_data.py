"""The stream tests' tiny registered datasets and tasks (st_*): `register()` adds them (once)
to the registries, in the test process (tests/mixing/conftest.py) and in launched ranks
(tests/mixing/ds_ranks.py)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from generalist.catalog.parts import vqa_parts
from generalist.catalog.records import DATASETS, Dataset, Record
from generalist.catalog.task import TASKS, Task

# dataset -> (records per train shard, train shards, validation records, with image)
SIZES = {
    "st_many": (20, 10, 12, True),  # 200 train records in 10 shards: shard-per-slot layout
    "st_few": (17, 3, 5, False),  # 51 records in 3 shards: striped when slots > 3
    "st_tiny": (30, 1, 4, False),  # 30 records in 1 shard: wraps often
}
TASK_OF = {"st_many": "st_task_many", "st_few": "st_task_few", "st_tiny": "st_task_tiny"}


def tiny_png(seed: int) -> bytes:
    image = Image.new("RGB", (8, 8), (seed % 251, (seed // 251) % 251, 7))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def _adapter(name: str):
    per_shard, shards, validation, with_image = SIZES[name]

    def iter_records(source: Path, split: str) -> Iterator[Record]:
        count = per_shard * shards if split == "train" else validation
        for i in range(count):
            seed = i + (0 if split == "train" else 10_000) + 100_000 * list(SIZES).index(name)
            yield Record(
                id=f"{name}-{split}-{i}",
                split=split,
                images=(tiny_png(seed),) if with_image else (),
                fields={"question": f"what is {i}?", "answer": f"{name} {i}"},
                meta={"n": i},
            )

    return iter_records


def register() -> None:
    for name in SIZES:
        if name not in DATASETS:
            DATASETS.register(
                Dataset(name=name, iter_records=_adapter(name), splits=("train", "validation"))
            )
        task = TASK_OF[name]
        if task not in TASKS:
            TASKS.register(
                Task(
                    name=task,
                    kind="vqa",
                    dataset=name,
                    instructions=("Answer.", "Reply."),
                    parts=vqa_parts,
                    shots=1 if name == "st_few" else 0,
                )
            )
    if "st_eval_only" not in TASKS:
        TASKS.register(
            Task(
                name="st_eval_only",
                kind="vqa",
                dataset="st_tiny",
                instructions=("Answer.",),
                parts=vqa_parts,
                shots=0,
                train_split=None,
            )
        )
