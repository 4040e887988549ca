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
from generalist.mixing.shares import TaskOrder
from generalist.mixing.stream import build_stream
from generalist.shards.manifest import read_records, split_shards

MIX = {"st_task_many": 3.0, "st_task_few": 1.0, "st_task_tiny": 1.0}


def take(stream, n: int) -> list:
    return list(itertools.islice(iter(stream), n))


@pytest.mark.parametrize("dataset", ["st_many", "st_few", "st_tiny"])
def test_task_order_holds_every_record_once_per_epoch(shard_root: Path, dataset: str) -> None:
    shards = split_shards(shard_root, dataset, "train")
    order = TaskOrder(dataset, shards, seed=0)
    for epoch in range(3):
        seen = Counter(
            (p.shard, p.sample)
            for p in map(order.locate, range(epoch * order.total, (epoch + 1) * order.total))
        )
        assert len(seen) == order.total and set(seen.values()) == {1}
        assert all(0 <= sample < shards[i].count for i, sample in seen)
    if len(shards) > 1:
        assert len({tuple(order.order(e)) for e in range(6)}) > 1  # reshuffled by epoch


@pytest.mark.parametrize(
    ("task", "world", "batch", "workers"),
    [("st_task_many", 3, 2, 0), ("st_task_few", 4, 1, 2), ("st_task_tiny", 8, 2, 2)],
)
def test_ranks_take_turns_over_the_records(
    shard_root: Path, global_batches, task: str, world: int, batch: int, workers: int
) -> None:
    """An epoch of the global sequence reads the split once, whatever the readers (st_tiny:
    30 records for 8 ranks x 2 workers = 32 readers)."""
    mix = mixture_from_rates("one", {task: 1.0})
    dataset = TASKS.get(task).dataset
    everything = sorted(r.id for r in read_records(shard_root, dataset, "train"))
    size = world * batch
    seen = list(
        itertools.chain.from_iterable(
            global_batches(mix, world, batch, workers, -(-len(everything) // size), seed=5)
        )
    )
    assert sorted(seen[: len(everything)]) == everything  # no record twice, none left out


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
