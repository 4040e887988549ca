"""Megatron-Energon as a `generalist bench stream` peer (pip install megatron-energon, or the
`bench` extra).

Conversion: each dataset's tar shards (linked, not copied) become an energon WebDataset with
`energon prepare`'s metadata (.nv-meta: the tar index in index.sqlite, split.yaml, a crude
dataset.yaml); a MetadatasetV2 blends one entry per task with the mixture's rates as weights
(subflavors name the task). Loading: `get_train_dataset` (shuffle buffer 100, at most 100
samples in a row from one shard, energon's usual settings) through a TaskEncoder whose cooker
hands on the raw json and image bytes (decoder=None: nothing decoded), and
`get_savable_loader`, whose `save_state_rank()` / `restore_state_rank()` resume it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from generalist.bench.stream_common import BATCH, Format, Pipeline, record_of
from generalist.catalog.records import Example
from generalist.catalog.task import TASKS
from generalist.shards.manifest import split_shards


def available() -> str | None:
    """None if energon imports, else why not."""
    try:
        import megatron.energon  # noqa: F401
    except ImportError as err:
        return f"megatron-energon is not installed ({err.name}); pip install -e '.[bench]'"
    return None


def convert(root: Path, rates: dict[str, float], work: Path) -> Path:
    """Energon datasets for each dataset under `work`, and the blend; returns its YAML."""
    from megatron.energon.flavors.webdataset.prepare import WebdatasetPreparator

    lines = ["__module__: megatron.energon", "__class__: MetadatasetV2", "splits:", "  train:"]
    lines.append("    blend:")
    for task, rate in rates.items():
        dataset = TASKS.get(task).dataset
        target = work / dataset
        if not target.is_dir():
            target.mkdir(parents=True)
            names = []
            for shard in split_shards(root, dataset, "train"):
                (target / shard.path.name).symlink_to(Path(shard.path).resolve())
                names.append(shard.path.name)
            WebdatasetPreparator.prepare_dataset(target, names, split_parts_ratio=[("train", 1.0)],
                                                 workers=1)  # fmt: skip
            (target / ".nv-meta" / "dataset.yaml").write_text(
                "__module__: megatron.energon\n__class__: CrudeWebdataset\n"
            )
        lines += [f"      - weight: {rate!r}", f"        path: {dataset}"]
        lines += ["        subflavors:", f"          task: {task}"]
    blend = work / "blend.yaml"
    blend.write_text("\n".join(lines) + "\n")
    return blend


def _task_encoder() -> Any:
    from megatron.energon import Cooker, DefaultTaskEncoder, Sample, basic_sample_keys, stateless

    @dataclass
    class RawSample(Sample):
        task: str
        doc: bytes
        images: list

    @stateless
    def cook(sample: dict) -> RawSample:
        keys = sorted((k for k in sample if k[:1].isdigit()), key=lambda k: int(k.split(".")[0]))
        task = sample["__subflavors__"]["task"]
        images = [sample[k] for k in keys]
        return RawSample(**basic_sample_keys(sample), task=task, doc=sample["json"], images=images)

    class RawEncoder(DefaultTaskEncoder):
        decoder = None  # hand on bytes: the same per-example work for every loader
        cookers = (Cooker(cook),)

        def batch(self, samples: list) -> list:
            return samples

    return RawEncoder()


class Energon(Pipeline):
    name = "megatron-energon"

    def __init__(self, root: Path, rates: dict[str, float], fmt: Format, seed: int, work: Path):
        self.fmt, self.seed = fmt, seed
        self.blend = convert(root, rates, work / "energon")

    def open(self) -> Any:
        from megatron.energon import WorkerConfig, get_savable_loader, get_train_dataset

        workers = WorkerConfig(rank=0, world_size=1, num_workers=0, seed_offset=self.seed)
        dataset = get_train_dataset(self.blend, worker_config=workers, batch_size=BATCH,
                                    shuffle_buffer_size=100, max_samples_per_sequence=100,
                                    task_encoder=_task_encoder())  # fmt: skip
        return get_savable_loader(dataset)

    def batches(self, loader: Any) -> Iterator[list[Example]]:
        for batch in loader:
            yield [self.fmt(s.task, record_of(json.loads(s.doc), s.images)) for s in batch]

    def state(self, loader: Any) -> Any:
        return loader.save_state_rank()

    def restore(self, state: Any) -> Any:
        loader = self.open()
        loader.restore_state_rank(state)
        return loader
