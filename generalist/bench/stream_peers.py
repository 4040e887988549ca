"""`generalist bench stream`'s loaders that need no conversion: ours, plain webdataset and
HF `interleave_datasets`, all reading our shards as they are."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from generalist.bench.stream_common import BATCH, Format, Pipeline, record_of
from generalist.catalog.mixture import Mixture
from generalist.catalog.records import Example
from generalist.catalog.task import TASKS
from generalist.mixing.stream import MixtureStream, build_stream
from generalist.shards.manifest import split_shards


def chunks(examples: Iterator[Example]) -> Iterator[list[Example]]:
    while True:
        yield list(itertools.islice(examples, BATCH))


def shard_urls(root: Path, task: str) -> list[str]:
    return [str(s.path) for s in split_shards(root, TASKS.get(task).dataset, "train")]


class Ours(Pipeline):
    """generalist.mixing.stream.build_stream, one process, no DataLoader workers."""

    def __init__(self, mixture: Mixture, root: Path, seed: int, schedule: str) -> None:
        self.mixture, self.root, self.seed, self.schedule = mixture, root, seed, schedule
        self.name = "generalist" if schedule == "stratified" else f"generalist-{schedule}"

    def open(self) -> MixtureStream:
        return build_stream(self.mixture, self.root, "train", seed=self.seed, batch_size=BATCH,
                            schedule=self.schedule)  # fmt: skip

    def batches(self, loader: MixtureStream) -> Iterator[list[Example]]:
        return chunks(iter(loader))

    def state(self, loader: MixtureStream) -> dict[str, Any]:
        return json.loads(json.dumps(loader.state_dict()))  # what a checkpoint would hold

    def restore(self, state: dict[str, Any]) -> MixtureStream:
        stream = self.open()
        stream.load_state_dict(state)
        return stream


def wds_images(sample: dict[str, Any]) -> list[bytes]:
    found = {int(k.split(".")[0]): v for k, v in sample.items() if k[:1].isdigit()}
    return [found[i] for i in range(len(found))]


class WebDataset(Pipeline):
    """Plain `webdataset.WebDataset` per task (resampled shards), mixed by `RandomMix`."""

    name = "webdataset"
    resumable = False  # webdataset keeps no state to resume from

    def __init__(self, root: Path, rates: dict[str, float], fmt: Format, seed: int) -> None:
        self.root, self.rates, self.fmt, self.seed = root, rates, fmt, seed

    def open(self) -> Any:
        import webdataset as wds

        pipelines = []
        for name in self.rates:

            def convert(sample: dict[str, Any], name: str = name) -> Example:
                doc = json.loads(sample["json"])
                return self.fmt(name, record_of(doc, wds_images(sample)))

            urls = shard_urls(self.root, name)
            dataset = wds.WebDataset(urls, resampled=True, shardshuffle=False, seed=self.seed)
            pipelines.append(dataset.map(convert))
        return wds.RandomMix(pipelines, probs=list(self.rates.values()))

    def batches(self, loader: Any) -> Iterator[list[Example]]:
        return chunks(iter(loader))


class HFInterleave(Pipeline):
    """`datasets.load_dataset("webdataset", streaming=True)` per task, repeated, mixed by
    `datasets.interleave_datasets(probabilities=...)`; images left undecoded."""

    name = "hf-interleave"

    def __init__(self, root: Path, rates: dict[str, float], fmt: Format, seed: int) -> None:
        self.root, self.rates, self.fmt, self.seed = root, rates, fmt, seed

    def open(self) -> Any:
        import datasets

        datasets.disable_progress_bars()
        parts = []
        for name in self.rates:
            files = {"train": shard_urls(self.root, name)}
            part = datasets.load_dataset("webdataset", data_files=files, split="train",
                                         streaming=True)  # fmt: skip
            for column in [c for c in (part.features or {}) if c[:1].isdigit()]:
                part = part.cast_column(column, datasets.Image(decode=False))  # keep bytes
            # JSON as text: interleave_datasets unifies features, which would merge the
            # datasets' different `fields` structs into one and drop keys.
            part = part.map(
                lambda row, name=name: {"task": name, "doc": json.dumps(row["json"])},
                remove_columns=["json"],
            )
            parts.append(part.repeat(None))
        return datasets.interleave_datasets(
            parts, probabilities=list(self.rates.values()), seed=self.seed
        )

    def batches(self, loader: Any) -> Iterator[list[Example]]:
        def examples() -> Iterator[Example]:
            for row in loader:
                images = [row[k]["bytes"] for k in sorted(row) if k[:1].isdigit() and row[k]]
                yield self.fmt(row["task"], record_of(json.loads(row["doc"]), images))

        return chunks(examples())
