"""What evaluation reads from the shards: each task's evaluation records and the train records
its exemplars are drawn from."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

from generalist.catalog.exemplars import DEFAULT_POOL_SIZE
from generalist.catalog.records import Record
from generalist.catalog.task import Task
from generalist.errors import ConfigError
from generalist.shards.manifest import load_manifest, read_records


def load_eval_records(
    tasks: Sequence[Task], shard_root: Path | str, split: str | None, max_examples: int | None
) -> tuple[dict[str, list[Record]], dict[str, list[Record] | None]]:
    """(eval records per task, exemplar-pool records per task) from the shards; the pool is
    the dataset's train split (None when it has none)."""
    records, pools = {}, {}
    for task in tasks:
        manifest = load_manifest(shard_root, task.dataset)
        which = split or task.eval_split
        if which not in manifest["splits"]:
            raise ConfigError(
                f"task {task.name!r}: dataset {task.dataset!r} under {shard_root} has no "
                f"{which!r} split (has {sorted(manifest['splits'])}); pick another split"
            )
        it = read_records(shard_root, task.dataset, which)
        records[task.name] = list(itertools.islice(it, max_examples))
        pools[task.name] = None
        if task.shots and "train" in manifest["splits"]:
            pool_it = read_records(shard_root, task.dataset, "train")
            pools[task.name] = list(itertools.islice(pool_it, DEFAULT_POOL_SIZE))
    return records, pools
