"""`generalist bench shard`: how fast `generalist shard` writes the easy-vqa demo data.

Reports records/s and MB/s (shard bytes written per second) with the real image policy
(224 px PNG by default); the last line of output is one JSON object. `easy_vqa` asks about
10 questions per image (each image is encoded once, then cached); `--dataset easy_vqa_images`
has one record per image, so every record costs a resize and a PNG encode.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from generalist.catalog.loading import load_catalog
from generalist.shards.manifest import summary_lines
from generalist.shards.writer import write_dataset


def measure(
    out: Path, limit: int, image_size: int, shard_size: int, dataset: str = "easy_vqa"
) -> dict[str, object]:
    """Shard `dataset` (first `limit` records of each split) into `out`; return the figures."""
    load_catalog()
    start = time.perf_counter()
    manifest = write_dataset(
        dataset,
        None,
        out,
        shard_size=shard_size,
        image_size=image_size,
        progress=False,
        limit=limit,
    )
    seconds = time.perf_counter() - start
    records = sum(s["count"] for s in manifest["splits"].values())
    shards = [shard for s in manifest["splits"].values() for shard in s["shards"]]
    megabytes = sum(s["bytes"] for s in shards) / 1e6
    for line in summary_lines(manifest):
        print(line)
    return {
        "benchmark": "shard",
        "dataset": dataset,
        "records": records,
        "shards": len(shards),
        "mb": round(megabytes, 3),
        "seconds": round(seconds, 3),
        "records_per_s": round(records / seconds, 1),
        "mb_per_s": round(megabytes / seconds, 3),
        "image_size": image_size,
        "cpus": os.cpu_count(),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="generalist bench shard", description=__doc__)
    parser.add_argument("--out", type=Path, help="shard root to keep (default: a temp dir)")
    parser.add_argument("--limit", type=int, default=1000, help="records per split")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--shard-size", type=int, default=1000)
    parser.add_argument("--dataset", choices=["easy_vqa", "easy_vqa_images"], default="easy_vqa")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="generalist-bench-shard-"))
    try:
        figures = measure(out, args.limit, args.image_size, args.shard_size, args.dataset)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
    print(json.dumps(figures))
    return 0
