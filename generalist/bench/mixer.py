"""`generalist bench mixer`: the mixer at cluster scale, ranks simulated in one process.

    generalist bench mixer                        # multimedbench at world 8, 64 and 256
    generalist bench mixer --world 8,64 --batches 2000 --batch-size 4 --workers 4

The schedule and the record each example reads are pure functions of (rank, world size,
worker), so every rank of a large world is computed here without data or processes: for the
shipped `multimedbench` mixture (Med-PaLM M's Table A.1 rates, min_per_batch 1, the stratified
schedule unless --schedule iid) it deals `--batches` global batches of batch-size x world and
reports, per world size and per task: the examples each rank received (min / max over ranks)
and the worst deviation of a rank from the even share (relative, and in standard deviations of
chance placement, sqrt(mean): what an even random deal gives is about 3-4 at 256 ranks), the
same over readers
(rank x worker), how often each record was read (min / max; records per task: examples-
proportional to 100,000 records, at least `--min-records`, so a rare task has fewer records than
readers at 256 x 4), and the resume time (a fresh schedule jumping to global batch 10^7 and
computing this rank's batch and record positions). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence

import numpy as np

from generalist.catalog.loading import load_catalog
from generalist.catalog.mixture import MIXTURES
from generalist.errors import ConfigError
from generalist.mixing.schedule import make_schedule

FAR = 10**7  # global batch a resume jumps to


def simulate(
    kind: str,
    rates: dict[str, float],
    minimum: int,
    world: int,
    batch: int,
    workers: int,
    batches: int,
    min_records: int,
) -> dict[str, object]:
    """Deal `batches` global batches to `world` ranks x `workers` readers; per-task figures."""
    tasks, size, readers = list(rates), world * batch, max(1, workers)
    schedule = make_schedule(kind, tasks, rates, 0, size, minimum)
    total = sum(rates.values())
    records = [max(min_records, round(rates[t] / total * 100_000)) for t in tasks]
    per_rank = np.zeros((world, len(tasks)), dtype=np.int64)
    per_reader = np.zeros((world * readers, len(tasks)), dtype=np.int64)
    ks: list[list[np.ndarray]] = [[] for _ in tasks]
    rank_of = np.repeat(np.arange(world), batch)
    started = time.perf_counter()
    for g in range(batches):
        labels = np.asarray(schedule.batch(g))
        occurrences = np.asarray(schedule.occurrences(g))
        np.add.at(per_rank, (rank_of, labels), 1)
        np.add.at(per_reader, (rank_of * readers + g % readers, labels), 1)
        for i in np.unique(labels):
            ks[i].append(occurrences[labels == i])
    dealt_s = time.perf_counter() - started
    out: dict[str, dict[str, object]] = {}
    for i, task in enumerate(tasks):
        seen = np.concatenate(ks[i]) if ks[i] else np.zeros(0, dtype=np.int64)
        reads = np.bincount(seen % records[i], minlength=records[i])
        ranks, slots = per_rank[:, i], per_reader[:, i]
        out[task] = {
            "rank_min": int(ranks.min()),
            "rank_max": int(ranks.max()),
            "worst_rank_deviation": _deviation(ranks),
            "worst_rank_z": _z(ranks),
            "reader_min": int(slots.min()),
            "reader_max": int(slots.max()),
            "worst_reader_deviation": _deviation(slots),
            "worst_reader_z": _z(slots),
            "records": records[i],
            "reads_per_record": [int(reads.min()), int(reads.max())],
        }
    return {
        "world": world,
        "readers": world * readers,
        "global_batch": size,
        "batches": batches,
        "deal_s": round(dealt_s, 2),
        "resume_s": _resume_s(kind, tasks, rates, size, minimum, batch),
        "tasks": out,
    }


def _deviation(counts: np.ndarray) -> float:
    """max over ranks of |count - mean| / mean (0 when the task was never seen)."""
    mean = counts.mean()
    return round(float(np.abs(counts - mean).max() / mean), 4) if mean else 0.0


def _z(counts: np.ndarray) -> float:
    """max over ranks of |count - mean| / sqrt(mean): in standard deviations of a count that
    falls on a rank by chance (a rare task's few examples per rank make the ratio noisy)."""
    mean = counts.mean()
    return round(float(np.abs(counts - mean).max() / np.sqrt(mean)), 2) if mean else 0.0


def _resume_s(
    kind: str, tasks: list[str], rates: dict[str, float], size: int, minimum: int, batch: int
) -> float:
    """A fresh schedule at global batch FAR: this rank's labels and record positions."""
    known = make_schedule(kind, tasks, rates, 0, size, minimum)
    counts = known.counts_before(FAR) if kind == "stratified" else [FAR] * len(tasks)
    started = time.perf_counter()
    fresh = make_schedule(kind, tasks, rates, 0, size, minimum)
    fresh.seed_counts(FAR, counts)  # i.i.d.: the counts a saved state carries
    fresh.batch(FAR)[:batch], fresh.occurrences(FAR)[:batch]
    return round(time.perf_counter() - started, 4)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="generalist bench mixer", description=__doc__)
    parser.add_argument("--world", default="8,64,256", help="comma-separated world sizes")
    parser.add_argument("--mixture", default="multimedbench")
    parser.add_argument("--schedule", default=None, help="stratified or iid (the mixture's)")
    parser.add_argument("--batch-size", type=int, default=4, help="examples per rank")
    parser.add_argument("--workers", type=int, default=4, help="dataloader workers per rank")
    parser.add_argument("--batches", type=int, default=0, help="global batches (0: ~500k ex.)")
    parser.add_argument("--min-records", type=int, default=24)
    args = parser.parse_args(argv)
    try:
        worlds = [int(w) for w in args.world.split(",") if w]
    except ValueError:
        raise ConfigError(f"--world: comma-separated integers, got {args.world!r}") from None
    if not worlds or min(worlds) < 1 or args.batch_size < 1 or args.workers < 0:
        raise ConfigError("--world, --batch-size must be >= 1 and --workers >= 0")
    load_catalog()
    mixture = MIXTURES.get(args.mixture)
    kind = args.schedule or mixture.schedule
    rates = mixture.rates()
    result: dict[str, object] = {
        "mixture": mixture.name,
        "schedule": kind,
        "min_per_batch": mixture.min_per_batch,
        "batch_size": args.batch_size,
        "workers": args.workers,
        "worlds": {},
    }
    for world in worlds:
        size = world * args.batch_size
        batches = args.batches or max(200, 500_000 // size)
        run = simulate(kind, rates, mixture.min_per_batch, world, args.batch_size,
                       args.workers, batches, args.min_records)  # fmt: skip
        result["worlds"][str(world)] = run  # type: ignore[index]
        worst = max(t["worst_rank_z"] for t in run["tasks"].values())  # type: ignore[union-attr]
        print(f"world {world}: {batches} global batches of {size}, worst rank deviation "
              f"{worst:.2f} sd, resume {run['resume_s']} s")  # fmt: skip
    print(json.dumps(result))
    return 0
