"""MosaicML streaming as a `generalist bench stream` peer: its maintained fork
streaming-community (the original, mosaicml-streaming, pins transformers<5 and numpy<2.2);
pip install streaming-community, or the `bench` extra.

Conversion: each task's records written with `MDSWriter` (columns: task, the record's JSON,
its images length-prefixed in one bytes column: no pickles). Loading: one `Stream` per task
with the mixture's rate as its `proportion`, `StreamingDataset(batching_method="stratified")`
(its nearest to exact proportions: each batch drawn per stream in proportion), shuffled, and
`StreamingDataLoader`, whose `state_dict()` / `load_state_dict()` resume it.
"""

from __future__ import annotations

import importlib.machinery
import json
import sys
import types
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


def _import_streaming() -> Any:
    """streaming's package imports its vision datasets, hence torchvision; where torchvision
    cannot load (a CUDA-only wheel beside a CPU torch, as on this project's CPU machines), that
    unused subpackage is replaced by an empty module so the MDS reader imports."""
    try:
        import streaming
    except (ImportError, RuntimeError, OSError) as err:
        if "torchvision" not in str(err) and "nms" not in str(err):
            raise
        for name in [m for m in sys.modules if m.startswith(("streaming", "torchvision"))]:
            del sys.modules[name]
        stub = types.ModuleType("streaming.vision")
        stub.__spec__ = importlib.machinery.ModuleSpec("streaming.vision", None)
        sys.modules["streaming.vision"] = stub
        import streaming
    return streaming


def available() -> str | None:
    try:
        _import_streaming()
    except ImportError as err:
        return f"streaming-community is not installed ({err.name}); pip install -e '.[bench]'"
    return None


def convert(root: Path, rates: dict[str, float], work: Path) -> dict[str, Path]:
    """One MDS directory per task under `work`."""
    streaming = _import_streaming()
    out = {}
    for task in rates:
        out[task] = work / task
        if (out[task] / "index.json").is_file():
            continue
        columns = {"task": "str", "doc": "str", "images": "bytes"}
        with streaming.MDSWriter(out=str(out[task]), columns=columns, size_limit=1 << 26) as mds:
            for record in read_records(root, TASKS.get(task).dataset, "train"):
                row = {"task": task, "doc": record_json(record)}
                mds.write({**row, "images": pack_images(record.images)})
    return out


def columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Collate as columns: StreamingDataLoader counts a dict batch by its first column."""
    return {key: [row[key] for row in rows] for key in ("task", "doc", "images")}


class Mosaic(Pipeline):
    name = "mosaic-streaming"

    def __init__(self, root: Path, rates: dict[str, float], fmt: Format, seed: int, work: Path):
        self.rates, self.fmt, self.seed = rates, fmt, seed
        self.dirs = convert(root, rates, work / "mds")
        self.epoch_size = 1 << 22  # one epoch covers any run of the bench

    def open(self) -> Any:
        streaming = _import_streaming()
        streams = [streaming.Stream(local=str(self.dirs[t]), proportion=r)
                   for t, r in self.rates.items()]  # fmt: skip
        dataset = streaming.StreamingDataset(
            streams=streams, shuffle=True, shuffle_seed=self.seed, batch_size=BATCH,
            batching_method="stratified", epoch_size=self.epoch_size,
        )  # fmt: skip
        return streaming.StreamingDataLoader(dataset, batch_size=BATCH, collate_fn=columns)

    def batches(self, loader: Any) -> Iterator[list[Example]]:
        while True:
            for batch in loader:
                rows = zip(batch["task"], batch["doc"], batch["images"])
                yield [self.fmt(t, record_of(json.loads(d), unpack_images(i))) for t, d, i in rows]
