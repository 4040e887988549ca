"""litdata as a `generalist bench stream` peer (pip install litdata, or the `bench` extra).

Conversion: each task's records written as litdata chunks with its `BinaryWriter` (what
`litdata.optimize` uses; fields: task, the record's JSON, its images length-prefixed in one
bytes field). Loading: one shuffled `StreamingDataset` per task, `CombinedStreamingDataset`
with the mixture's rates as weights, and `StreamingDataLoader`, whose `state_dict()` /
`load_state_dict()` resume it. The combined dataset ends when one task runs out; the loader
then starts its next epoch.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from generalist.bench.stream_common import (
    BATCH,
    Format,
    Pipeline,
    pack_images,
    record_json,
    record_of,
    unpack_images,
)
from generalist.catalog.records import Example
from generalist.catalog.task import TASKS
from generalist.shards.manifest import read_records


def available() -> str | None:
    try:
        import litdata  # noqa: F401
    except ImportError as err:
        return f"litdata is not installed ({err.name}); pip install -e '.[bench]'"
    return None


def convert(root: Path, rates: dict[str, float], work: Path) -> dict[str, Path]:
    """One litdata chunk directory per task under `work`."""
    from litdata.streaming.writer import BinaryWriter

    out = {}
    for task in rates:
        out[task] = work / task
        if (out[task] / "index.json").is_file():
            continue
        writer = BinaryWriter(str(out[task]), chunk_bytes="64MB")
        for n, record in enumerate(read_records(root, TASKS.get(task).dataset, "train")):
            row = {"task": task, "doc": record_json(record)}
            writer[n] = {**row, "images": pack_images(record.images)}
        writer.done()
        writer.merge()
    return out


def rows(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return batch


class LitData(Pipeline):
    name = "litdata"

    def __init__(self, root: Path, rates: dict[str, float], fmt: Format, seed: int, work: Path):
        self.rates, self.fmt, self.seed = rates, fmt, seed
        self.dirs = convert(root, rates, work / "litdata")

    def open(self) -> Any:
        from litdata import CombinedStreamingDataset, StreamingDataLoader, StreamingDataset

        parts = [StreamingDataset(str(self.dirs[t]), shuffle=True, seed=self.seed)
                 for t in self.rates]  # fmt: skip
        combined = CombinedStreamingDataset(parts, weights=list(self.rates.values()),
                                            seed=self.seed, iterate_over_all=False)  # fmt: skip
        return StreamingDataLoader(combined, batch_size=BATCH, num_workers=0, collate_fn=rows)

    def batches(self, loader: Any) -> Iterator[list[Example]]:
        while True:
            for batch in loader:
                yield [
                    self.fmt(r["task"], record_of(json.loads(r["doc"]), unpack_images(r["images"])))
                    for r in batch
                ]
