"""The stream: disjoint complete coverage per epoch, determinism, proportions, formatting."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from pathlib import Path

import pytest

from generalist.catalog.exemplars import ExemplarPool, format_example
from generalist.catalog.mixture import mixture_from_rates
from generalist.catalog.task import TASKS
from generalist.mixing.shares import TaskShares
from generalist.mixing.stream import build_stream
from generalist.shards.manifest import read_records, split_shards

MIX = {"st_task_many": 3.0, "st_task_few": 1.0, "st_task_tiny": 1.0}


def take(stream, n: int) -> list:
    return list(itertools.islice(iter(stream), n))


@pytest.mark.parametrize(("dataset", "slots"), [("st_many", 3), ("st_many", 10), ("st_few", 4)])
def test_layout_covers_every_record_once_per_epoch(shard_root: Path, dataset: str, slots: int):
    shards = split_shards(shard_root, dataset, "train")
    layout = TaskShares(dataset, shards, seed=0, slots=slots)
    assert layout.striped == (len(shards) < slots)
    for epoch in range(3):
        seen = Counter(
            (seg.shard, seg.first + seg.stride * k)
            for slot in range(slots)
            for seg in layout.segments(epoch, slot)
            for k in range(seg.length)
        )
        assert len(seen) == layout.total and set(seen.values()) == {1}
        assert all(0 <= offset < shards[i].count for i, offset in seen)
    orders = {tuple(layout.order(e)) for e in range(6)}
    assert len(orders) > 1  # shard order is reshuffled by epoch


@pytest.mark.parametrize(("task", "world"), [("st_task_many", 3), ("st_task_few", 4)])
def test_ranks_read_disjoint_data_and_nothing_is_dropped(shard_root: Path, task: str, world: int):
    """Every rank reads its share of one epoch: the union is the split, with no duplicates."""
    mix = mixture_from_rates("one", {task: 1.0})
    ids = []
    for rank in range(world):
        stream = build_stream(mix, shard_root, seed=5, rank=rank, world_size=world)
        length = stream.plans[0].layout.epoch_length(0, rank)
        ids += [e.id for e in take(stream, length)]
    dataset = TASKS.get(task).dataset
    assert sorted(ids) == sorted(r.id for r in read_records(shard_root, dataset, "train"))


@pytest.mark.parametrize("schedule", ["stratified", "iid"])
def test_identical_inputs_give_identical_sequences(shard_root: Path, schedule: str) -> None:
    mix = mixture_from_rates("m", MIX, min_per_batch=1, schedule=schedule)

    def run(seed: int, rank: int = 0) -> list[tuple[str, str, str]]:
        stream = build_stream(mix, shard_root, seed=seed, rank=rank, world_size=2, batch_size=4)
        return [(e.task, e.id, e.prompt) for e in take(stream, 300)]

    assert run(1) == run(1)
    assert run(1) != run(2)
    # within an epoch (the first 40 examples wrap no task) the two ranks share no record
    assert not {i for _, i, _ in run(1)[:40]} & {i for _, i, _ in run(1, rank=1)[:40]}


@pytest.mark.parametrize("schedule", ["stratified", "iid"])
def test_realized_proportions_match_targets(shard_root: Path, schedule: str) -> None:
    """Without a per-batch minimum the realized rates stay within 5 standard errors."""
    rates = {"st_task_many": 59.90, "st_task_few": 0.15, "st_task_tiny": 10}
    mix = mixture_from_rates("m", rates, schedule=schedule)
    stream = build_stream(mix, shard_root, seed=0, batch_size=8)
    n = 4000
    seen = Counter(e.task for e in take(stream, n))
    assert stream.counts("rank") == dict(seen)
    realized = stream.realized_rates()
    for task, p in stream.target_rates.items():
        assert realized[task] == seen[task] / n
        assert abs(realized[task] - p) <= 5 * math.sqrt(p * (1 - p) / n) + 1 / n, task
    assert seen["st_task_few"] > 0


@pytest.mark.parametrize("schedule", ["stratified", "iid"])
def test_per_batch_minimum_in_the_stream(shard_root: Path, schedule: str) -> None:
    rates = {"st_task_many": 50, "st_task_few": 0.5, "st_task_tiny": 0.5}
    mix = mixture_from_rates("m", rates, min_per_batch=1, schedule=schedule)
    per_rank = [
        build_stream(mix, shard_root, seed=0, rank=r, world_size=2, batch_size=2) for r in (0, 1)
    ]
    streams = [iter(s) for s in per_rank]
    for _ in range(100):  # global batch of 4 examples: 2 from each rank
        tasks = {next(s).task for s in streams for _ in range(2)}
        assert tasks == set(mix.rates())


def test_examples_are_formatted_like_render(shard_root: Path) -> None:
    """Epoch 0 formats exactly as exemplars.format_example (what `generalist render` shows)."""
    mix = mixture_from_rates("m", {"st_task_few": 1.0})
    stream = build_stream(mix, shard_root, seed=9, exemplar_pool_size=50)
    task = TASKS.get("st_task_few")
    records = {r.id: r for r in read_records(shard_root, "st_few", "train")}
    pool = ExemplarPool(task, read_records(shard_root, "st_few", "train"), limit=50)
    for example in take(stream, 20):
        expected = format_example(task, records[example.id], pool, seed=9, train=True)
        assert example == expected
        assert len(example.exemplar_ids) == 1 and example.exemplar_ids[0] != example.id


def test_images_pass_through(shard_root: Path) -> None:
    stream = build_stream(mixture_from_rates("m", {"st_task_many": 1.0}), shard_root)
    example = take(stream, 1)[0]
    assert len(example.images) == 1 and example.images[0][:4] == b"\x89PNG"
    assert "<image>" in example.prompt


def test_eval_stream_reads_each_task_once_with_template_zero(shard_root: Path) -> None:
    mix = mixture_from_rates("m", MIX)
    ids = []
    for worker_rank in range(2):
        stream = build_stream(
            mix, shard_root, "validation", rank=worker_rank, world_size=2, train=False
        )
        examples = list(stream)
        assert all(e.template_index == 0 for e in examples)
        ids += [e.id for e in examples]
    assert len(ids) == len(set(ids)) == 12 + 5 + 4


def test_examples_proportional_mixture_takes_counts_from_manifests(shard_root: Path) -> None:
    from generalist.catalog.mixture import examples_proportional_mixture

    mix = examples_proportional_mixture(
        "ep", ["st_task_many", "st_task_few", "st_task_tiny"], cap=60
    )
    stream = build_stream(mix, shard_root)
    # train counts 200, 51, 30; the cap makes many count as 60
    assert stream.target_rates == pytest.approx(
        {"st_task_many": 60 / 141, "st_task_few": 51 / 141, "st_task_tiny": 30 / 141}
    )
