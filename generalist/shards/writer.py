"""Writes a dataset's records as WebDataset shards plus manifest.json (format: shards.manifest),
into a local directory or, through a local one, to a URL (s3://, gs://, ...).

Safety: everything is written into a hidden temporary sibling directory; manifest.json goes in
last (tmp file + os.replace) and the directory is swapped in at the very end, so an interrupted
run (exception, Ctrl-C, SIGKILL) never leaves a dataset that looks complete, and a re-run
replaces the old dataset cleanly (it stays readable until the swap).
"""

from __future__ import annotations

import datetime
import itertools
import json
import os
import shutil
import tempfile
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tqdm import tqdm

from generalist.atomic import atomic_dir, atomic_write
from generalist.catalog.records import DATASETS, BadRecord, Dataset, Record
from generalist.errors import ConfigError, DataError
from generalist.shards.checks import RecordChecks, json_type
from generalist.shards.images import ImagePolicy
from generalist.shards.manifest import FORMAT_VERSION, MANIFEST, dataset_dir, sample_key
from generalist.shards.samples import ImageCache, SplitWriter, encode_sample
from generalist.shards.storage import RemotePath, is_url, upload_dataset

MAX_SKIPPED_EXAMPLES = 10


def _clean_stale(root: Path, name: str) -> None:
    """Remove temporary dirs left by killed runs (their process is gone)."""
    for path in root.glob(f".{name}.*-*"):
        pid = path.name.rsplit("-", 1)[-1]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(path, ignore_errors=True)
        except PermissionError:
            pass  # another user's live process


def write_manifest(directory: Path, manifest: dict[str, Any]) -> None:
    """Atomically write manifest.json (the mark of a complete dataset)."""
    text = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    atomic_write(directory / MANIFEST, text)


def write_dataset(
    dataset_name: str,
    source: Path | str | None,
    root: Path | str,
    splits: Sequence[str] | None = None,
    shard_size: int = 1000,
    image_size: int = 224,
    skip_bad: bool = False,
    progress: bool = True,
    image_format: str = "png",
    limit: int | None = None,
    workers: int | None = None,
    options: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Shard `dataset_name` from `source` into `root/<dataset_name>/`; returns the manifest.

    source=None uses the dataset's default source (easy-vqa). A bad record raises a DataError
    naming it, or with skip_bad is skipped and counted in the manifest. `limit` keeps the first
    N records of each split (quick trials, benchmarks). `workers` threads encode images
    (default: one per CPU, at most 8). `options` go to the adapter (Dataset.options) and
    into the manifest. `root` may be a URL (generalist.shards.storage): the dataset is written
    completely into a local temporary directory, then uploaded, its manifest last.
    """
    if is_url(root):
        with tempfile.TemporaryDirectory(prefix="generalist-shard-") as staging:
            manifest = write_dataset(dataset_name, source, staging, splits, shard_size,
                                     image_size, skip_bad, progress, image_format, limit,
                                     workers)  # fmt: skip
            remote = RemotePath(str(root)) / dataset_name
            upload_dataset(Path(staging) / dataset_name, remote, MANIFEST)
        return manifest
    dataset = DATASETS.get(dataset_name)
    options = dict(options or {})
    dataset.check_options(options)
    splits = list(splits or dataset.splits)
    unknown = [s for s in splits if s not in dataset.splits]
    if unknown:
        raise ConfigError(
            f"dataset {dataset_name!r} has splits {list(dataset.splits)}; not {unknown}"
        )
    workers = workers or min(8, os.cpu_count() or 1)
    if shard_size < 1:
        raise ConfigError(f"shard size must be at least 1, got {shard_size}")
    policy = ImagePolicy(size=image_size, format=image_format)
    if source is None:
        if dataset.default_source is None:
            raise ConfigError(f"dataset {dataset_name!r} needs --source PATH (its published files)")
        source = dataset.default_source()
    source = Path(source)
    if not source.exists():
        raise DataError(f"dataset {dataset_name!r}: source {source} does not exist")

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _clean_stale(root, dataset_name)
    # a pid-named temporary, so _clean_stale can tell a killed run's leftovers from a live one's
    tmp_name = root / f".{dataset_name}.tmp-{os.getpid()}"
    with atomic_dir(dataset_dir(root, dataset_name), tmp_name) as tmp:
        manifest = _write_splits(
            dataset,
            source,
            tmp,
            splits,
            shard_size,
            policy,
            skip_bad,
            progress,
            limit,
            workers,
            options,
        )
        write_manifest(tmp, manifest)
    return manifest


def open_splits(
    dataset: Dataset, source: Path, splits: list[str], options: Mapping[str, str] | None = None
) -> dict[str, Iterator]:
    """Each split's record iterator with its first item already read, so file-level errors
    (a missing file, wrong columns) in any split stop the run before a shard is written."""
    opened = {}
    for split in splits:
        records = iter(dataset.records(source, split, options))
        first = next(records, None)
        opened[split] = records if first is None else itertools.chain([first], records)
    return opened


class _SplitJob:
    """Writes one split: checks records in order, encodes images on a thread pool (PIL
    releases the GIL while resizing and compressing), writes samples in the adapter's order."""

    def __init__(self, writer: SplitWriter, checks: RecordChecks, stats: dict[str, Any]) -> None:
        self.writer, self.checks, self.stats = writer, checks, stats
        self.pending: deque[tuple[Record, Future]] = deque()
        self.skipped = 0

    def bad(self, err: BadRecord, skip_bad: bool) -> None:
        if not skip_bad:
            raise err
        self.skipped += 1
        if len(self.stats["examples"]) < MAX_SKIPPED_EXAMPLES:
            self.stats["examples"].append(f"{self.writer.split}: {err}")

    def drain(self, keep: int, skip_bad: bool, bar: tqdm) -> None:
        """Write finished samples in order until at most `keep` are pending."""
        while len(self.pending) > keep:
            record, future = self.pending.popleft()
            try:
                sample = future.result()
            except BadRecord as err:
                self.bad(err, skip_bad)
                continue
            self.writer.write(sample_key(self.writer.count), sample)
            for key, value in record.fields.items():
                self.stats["field_types"].setdefault(key, set()).add(json_type(value))
            self.stats["image_counts"].append(len(record.images))
            bar.update()


def _write_split(
    job: _SplitJob,
    records: Iterator[Record | BadRecord],
    pool: ThreadPoolExecutor,
    encode: Callable[[Record, list[bytes]], dict[str, bytes]],
    skip_bad: bool,
    limit: int | None,
    bar: tqdm,
    window: int,
) -> None:
    split = job.writer.split
    for item in records:
        try:
            if isinstance(item, BadRecord):
                raise item
            hashes = job.checks.record(item, split)
        except DataError as err:
            # Queued, not raised: errors surface in record order, after the records before.
            failed: Future = Future()
            failed.set_exception(err)
            job.pending.append((item, failed))
        else:
            # Committed before encoding so records in flight are checked against each other.
            job.checks.commit(item, split, hashes)
            job.pending.append((item, pool.submit(encode, item, hashes)))
        job.drain(window, skip_bad, bar)
        if limit is not None and job.writer.count + len(job.pending) >= limit:
            break
    job.drain(0, skip_bad, bar)


def _write_splits(
    dataset: Dataset,
    source: Path,
    directory: Path,
    splits: list[str],
    shard_size: int,
    policy: ImagePolicy,
    skip_bad: bool,
    progress: bool,
    limit: int | None,
    workers: int,
    options: Mapping[str, str],
) -> dict[str, Any]:
    checks = RecordChecks(dataset)
    stats: dict[str, Any] = {"field_types": {}, "image_counts": [], "examples": []}
    skipped: dict[str, int] = {}
    written: dict[str, Any] = {}
    cache = ImageCache()

    def encode(record: Record, hashes: list[bytes]) -> dict[str, bytes]:
        return encode_sample(record, policy, hashes, cache)

    streams = open_splits(dataset, source, splits, options)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shard-encode") as pool:
        for split in splits:
            job = _SplitJob(SplitWriter(directory, split, shard_size), checks, stats)
            bar = tqdm(desc=f"{dataset.name}/{split}", unit="rec", disable=not progress)
            try:
                records = streams.pop(split)
                # 4 queued records per thread keep every thread busy without holding many images.
                _write_split(job, records, pool, encode, skip_bad, limit, bar, 4 * workers)
            except BaseException:
                for _, future in job.pending:
                    future.cancel()
                job.writer.abort()
                raise
            finally:
                bar.close()
            written[split] = job.writer.close()
            skipped[split] = job.skipped
    counts = stats["image_counts"]
    return {
        "format_version": FORMAT_VERSION,
        "dataset": dataset.name,
        "adapter": f"{dataset.iter_records.__module__}:{dataset.iter_records.__qualname__}",
        "adapter_version": dataset.version,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "source": str(source),
        "options": dict(options),
        "image_policy": policy.to_json(),
        "images_split_disjoint": dataset.images_split_disjoint,
        "splits": written,
        "fields": {k: "|".join(sorted(v)) for k, v in sorted(stats["field_types"].items())},
        "images_per_record": {"min": min(counts, default=0), "max": max(counts, default=0)},
        "skipped": skipped,
        "skipped_examples": stats["examples"],
    }
