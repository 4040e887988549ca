"""`generalist bench stream`: examples/s and proportion error of the mixture stream.

    generalist bench stream                       # shards easy-vqa into a temp dir first
    generalist bench stream --shards shards/ --examples 20000

Compares, on the same shards, the same mixture rates and the same per-example work (JSON
decode to a Record, image bytes kept encoded, `format_example` with the same exemplar pools):
  ours        generalist.mixing.stream.build_stream (one process, no dataloader workers)
  webdataset  plain `webdataset.WebDataset` per task mixed by `webdataset.RandomMix`
  hf          `datasets.load_dataset("webdataset", streaming=True)` per task mixed by
              `datasets.interleave_datasets(probabilities=...)`, images left undecoded
Targets: ours >= 0.9x webdataset and >= 2x hf. The mixture is `demo`'s rates without its
per-batch minimum (which shifts proportions on purpose). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from generalist.catalog.exemplars import ExemplarPool, format_example
from generalist.catalog.loading import load_catalog
from generalist.catalog.mixture import MIXTURES, mixture_from_rates
from generalist.catalog.records import Example, Record
from generalist.catalog.task import TASKS
from generalist.errors import ConfigError
from generalist.mixing.stream import build_stream
from generalist.shards.manifest import load_manifest, split_shards
from generalist.shards.writer import write_dataset


def write_demo_shards(root: Path, limit: int) -> None:
    """easy-vqa questions and images, train split, first `limit` records each."""
    for dataset in ("easy_vqa", "easy_vqa_images"):
        write_dataset(dataset, None, root, splits=["train"], shard_size=500, image_size=64,
                      progress=False, limit=limit)  # fmt: skip


def record_of(doc: dict[str, Any], images: list[bytes]) -> Record:
    """The same decoding as generalist.shards.decode_sample, for the baselines."""
    return Record(str(doc["id"]), str(doc["split"]), tuple(images), doc["fields"], doc["meta"])


def wds_images(sample: dict[str, Any]) -> list[bytes]:
    found = {int(k.split(".")[0]): v for k, v in sample.items() if k[:1].isdigit()}
    return [found[i] for i in range(len(found))]


def timed(examples: Iterator[Example], n: int) -> tuple[float, Counter]:
    start = time.perf_counter()
    counts = Counter(example.task for example in itertools.islice(examples, n))
    if sum(counts.values()) < n:
        raise ConfigError(f"the pipeline ended after {sum(counts.values())} of {n} examples")
    return n / (time.perf_counter() - start), counts


def webdataset_examples(
    root: Path, rates: dict[str, float], fmt: Callable[[str, Record], Example], seed: int
) -> Iterator[Example]:
    import webdataset as wds

    pipelines = []
    for name in rates:
        urls = [str(s.path) for s in split_shards(root, TASKS.get(name).dataset, "train")]

        def convert(sample: dict[str, Any], name: str = name) -> Example:
            doc = json.loads(sample["json"])
            return fmt(name, record_of(doc, wds_images(sample)))

        dataset = wds.WebDataset(urls, resampled=True, shardshuffle=False, seed=seed)
        pipelines.append(dataset.map(convert))
    return iter(wds.RandomMix(pipelines, probs=list(rates.values())))


def hf_examples(
    root: Path, rates: dict[str, float], fmt: Callable[[str, Record], Example], seed: int
) -> Iterator[Example]:
    import datasets

    datasets.disable_progress_bars()
    parts = []
    for name in rates:
        urls = [str(s.path) for s in split_shards(root, TASKS.get(name).dataset, "train")]
        part = datasets.load_dataset("webdataset", data_files={"train": urls}, split="train",
                                     streaming=True)  # fmt: skip
        for column in [c for c in (part.features or {}) if c[:1].isdigit()]:
            part = part.cast_column(column, datasets.Image(decode=False))  # same: keep bytes
        # JSON as text: interleave_datasets unifies features, which would merge the two
        # datasets' different `fields` structs into one and drop keys.
        part = part.map(
            lambda row, name=name: {"task": name, "doc": json.dumps(row["json"])},
            remove_columns=["json"],
        )
        parts.append(part)
    mixed = datasets.interleave_datasets(
        parts, probabilities=list(rates.values()), seed=seed, stopping_strategy="all_exhausted"
    )
    for row in mixed:
        images = [row[k]["bytes"] for k in sorted(row) if k[:1].isdigit() and row[k]]
        yield fmt(row["task"], record_of(json.loads(row["doc"]), images))


def max_error(counts: Counter, rates: dict[str, float]) -> float:
    total = sum(counts.values())
    return max(abs(counts[t] / total - r) for t, r in rates.items())


def run(root: Path, n: int, seed: int) -> dict[str, Any]:
    mixture = mixture_from_rates("bench", MIXTURES.get("demo").rates())
    built = time.perf_counter()
    stream = build_stream(mixture, root, "train", seed=seed, batch_size=32)
    build_s = time.perf_counter() - built
    rates = stream.target_rates
    pools: dict[str, ExemplarPool | None] = {p.task.name: p.pool for p in stream.plans}

    def fmt(name: str, record: Record) -> Example:
        return format_example(TASKS.get(name), record, pools[name], seed=seed, train=True)

    ours, ours_counts = timed(iter(stream), n)
    plain, plain_counts = timed(webdataset_examples(root, rates, fmt, seed), n)
    hf, hf_counts = timed(hf_examples(root, rates, fmt, seed), n)
    return {
        "examples_per_s": round(ours, 1),
        "vs_webdataset": round(ours / plain, 3),
        "vs_hf_interleave": round(ours / hf, 3),
        "max_rate_error": round(max_error(ours_counts, rates), 4),
        "webdataset_examples_per_s": round(plain, 1),
        "hf_interleave_examples_per_s": round(hf, 1),
        "webdataset_max_rate_error": round(max_error(plain_counts, rates), 4),
        "hf_interleave_max_rate_error": round(max_error(hf_counts, rates), 4),
        "examples": n,
        "target_rates": {t: round(r, 4) for t, r in rates.items()},
        "stream_build_s": round(build_s, 2),
        "meets_targets": ours >= 0.9 * plain and ours >= 2 * hf,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="generalist bench stream", description=__doc__)
    parser.add_argument("--shards", type=Path, help="shard root with easy_vqa, easy_vqa_images")
    parser.add_argument("--examples", type=int, default=6000, help="examples per pipeline")
    parser.add_argument("--limit", type=int, default=4000, help="records per dataset (temp)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    load_catalog()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the shards are local: no hub lookups
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        root = args.shards
        if root is None:
            root = Path(tmp) / "shards"
            started = time.perf_counter()
            write_demo_shards(root, args.limit)
            print(f"wrote demo shards in {time.perf_counter() - started:.1f} s")
        for dataset in ("easy_vqa", "easy_vqa_images"):
            load_manifest(root, dataset)  # a clear error before any timing
        result = run(root, args.examples, args.seed)
    for key in ("examples_per_s", "webdataset_examples_per_s", "hf_interleave_examples_per_s"):
        print(f"{key}: {result[key]}")
    print(json.dumps(result))
    return 0
