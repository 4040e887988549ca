"""`generalist shard DATASET`: write a dataset's published files as WebDataset shards.

generalist shard easy_vqa --out shards/              # easy-vqa needs no --source
generalist shard medqa --source data/medqa --out shards/ --splits train test
generalist shard slake_vqa --source Slake1.0 --out shards/ --option language=all
generalist shard easy_vqa --out s3://bucket/shards  # written locally, then uploaded
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from generalist.catalog.loading import load_catalog
from generalist.catalog.records import DATASETS
from generalist.cli.options import (
    add_dataset_option_argument,
    add_import_argument,
    parse_dataset_options,
)
from generalist.errors import ConfigError
from generalist.shards.images import FORMATS
from generalist.shards.manifest import summary_lines
from generalist.shards.writer import write_dataset


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="generalist shard", description=__doc__.split("\n")[0])
    parser.add_argument(
        "dataset", help="a registered dataset (`generalist tasks` shows each task's)"
    )
    parser.add_argument("--source", type=Path, help="the dataset's published files")
    parser.add_argument(
        "--out", required=True, help="shard root: a directory, or a URL (s3://bucket/shards)"
    )
    parser.add_argument("--splits", nargs="+", help="splits to write (default: all)")
    parser.add_argument("--shard-size", type=int, default=1000, help="records per shard")
    parser.add_argument("--image-size", type=int, default=224, help="square image side (px)")
    parser.add_argument("--image-format", choices=sorted(FORMATS), default="png")
    parser.add_argument("--skip-bad", action="store_true", help="skip bad rows, count them")
    parser.add_argument("--limit", type=int, help="keep only the first N records per split")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_dataset_option_argument(parser)
    add_import_argument(parser)
    args = parser.parse_args(argv)
    options = parse_dataset_options(args.options)
    load_catalog(args.imports)
    dataset = DATASETS.get(args.dataset)
    dataset.check_options(options)
    if args.source is None and dataset.default_source is None:
        what = dataset.published_format or "its published files"
        raise ConfigError(f"dataset {dataset.name!r} needs --source PATH ({what})")
    manifest = write_dataset(
        dataset.name,
        args.source,
        args.out,
        splits=args.splits,
        shard_size=args.shard_size,
        image_size=args.image_size,
        skip_bad=args.skip_bad,
        progress=not args.no_progress,
        image_format=args.image_format,
        limit=args.limit,
        options=options,
    )
    for line in summary_lines(manifest):
        print(line)
    return 0
