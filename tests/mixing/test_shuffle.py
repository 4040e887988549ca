"""Samples inside a shard come in a seeded per-epoch permutation; coverage and resume stay exact."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest

from generalist.catalog.mixture import mixture_from_rates
from generalist.errors import ConfigError, DataError
from generalist.mixing.shares import Reader, TaskOrder
from generalist.mixing.stream import build_stream
from generalist.shards.index import index_shard, read_indexed
from generalist.shards.manifest import read_records, split_shards
from generalist.shards.reader import iter_shard

ONE_MANY = mixture_from_rates("one", {"st_task_many": 1.0})
MIX = mixture_from_rates(
    "m", {"st_task_many": 3.0, "st_task_few": 1.0, "st_task_tiny": 1.0}, min_per_batch=1
)


def index_of(record_id: str) -> int:
    """'st_many-train-37' -> 37 (the record's written position in its split)."""
    return int(record_id.rsplit("-", 1)[1])


def per_shard_orders(ids: list[str], per_shard: int) -> dict[int, list[int]]:
    """Written positions of the ids, grouped by shard, in the order they came."""
    orders: dict[int, list[int]] = {}
    for record_id in ids:
        i = index_of(record_id)
        orders.setdefault(i // per_shard, []).append(i % per_shard)
    return orders


def test_order_inside_shards_is_shuffled_and_changes_by_epoch(shard_root: Path) -> None:
    stream = build_stream(ONE_MANY, shard_root, seed=4)
    ids = [e.id for e in itertools.islice(iter(stream), 400)]  # epochs 0 and 1: 200 each
    epochs = [per_shard_orders(ids[:200], 20), per_shard_orders(ids[200:], 20)]
    for orders in epochs:
        assert sorted(orders) == list(range(10))
        for order in orders.values():  # every sample of the shard once, not in written order
            assert sorted(order) == list(range(20)) and order != sorted(order)
    assert all(epochs[0][s] != epochs[1][s] for s in range(10))
    # the shard is still read whole before the next one (one slot): the first 20 share a shard
    assert len({index_of(i) // 20 for i in ids[:20]}) == 1
    # no long runs of consecutive samples: neighbours are rarely written neighbours
    steps = [index_of(b) - index_of(a) for a, b in itertools.pairwise(ids[:200])]
    assert sum(step == 1 for step in steps) < 30


def test_opt_out_and_evaluation_keep_written_order(shard_root: Path) -> None:
    plain = build_stream(ONE_MANY, shard_root, seed=4, shuffle_within_shard=False)
    ids = [e.id for e in itertools.islice(iter(plain), 200)]
    for order in per_shard_orders(ids, 20).values():
        assert order == list(range(20))
    assert plain.state_dict()["config"]["shuffle_within_shard"] is False
    evaluation = build_stream(ONE_MANY, shard_root, "validation", train=False)
    assert [e.id for e in evaluation] == [f"st_many-validation-{i}" for i in range(12)]


def test_seed_decides_the_order_and_identical_inputs_repeat_it(shard_root: Path) -> None:
    def run(seed: int, rank: int = 0) -> list[str]:
        stream = build_stream(MIX, shard_root, seed=seed, rank=rank, world_size=2, batch_size=4)
        return [e.id for e in itertools.islice(iter(stream), 150)]

    assert run(6) == run(6) and run(6, rank=1) == run(6, rank=1)
    assert run(6) != run(7)


@pytest.mark.parametrize("dataset", ["st_many", "st_few"])
def test_readers_cover_every_record_once_per_epoch_in_a_shuffled_order(
    shard_root: Path, dataset: str
) -> None:
    order = TaskOrder(dataset, split_shards(shard_root, dataset, "train"), seed=2)
    reader = Reader(order)
    everything = sorted(r.id for r in read_records(shard_root, dataset, "train"))
    for epoch in range(2):
        seen = [reader.read(k)[1].id for k in range(epoch * order.total, (epoch + 1) * order.total)]
        assert sorted(seen) == everything  # disjoint (no duplicate) and complete
        # positions map to a permutation inside each shard: not the written order
        assert [index_of(i) for i in seen[:10]] != sorted(index_of(i) for i in seen[:10])


def test_two_ranks_two_workers_cover_a_task_with_fewer_shards_than_readers(
    shard_root: Path, global_batches
) -> None:
    """st_few: 51 records in 3 shards, 4 readers; 8 global batches of 6 hold 48 distinct
    records, 9 hold all 51 (and 3 of the next epoch)."""
    ids = list(
        itertools.chain.from_iterable(
            global_batches(mixture_from_rates("few", {"st_task_few": 1.0}), 2, 3, 2, 9)
        )
    )
    assert len(set(ids[:48])) == 48
    assert Counter(ids[:51]) == Counter(r.id for r in read_records(shard_root, "st_few", "train"))


@pytest.mark.parametrize("schedule", ["stratified", "iid"])
@pytest.mark.parametrize("point", [3, 41])
def test_two_workers_resume_mid_shard_and_after_a_wrap(
    shard_root: Path, point: int, schedule: str
) -> None:
    """Batch 3: mid-shard everywhere; batch 41: st_tiny (30 records) has wrapped."""

    def loader():
        stream = build_stream(
            MIX, shard_root, seed=8, batch_size=4, num_workers=2, schedule=schedule
        )
        return stream.dataloader()

    def batches(it, n: int) -> list[list[str]]:
        return [[e.id for e in batch] for batch in itertools.islice(iter(it), n)]

    full = batches(loader(), point + 12)
    head_loader = loader()
    assert batches(head_loader, point) == full[:point]
    state = json.loads(json.dumps(head_loader.state_dict()))
    assert state["readers"]["st_task_many"]["offset"] > 0  # the task stands inside a shard
    if point == 41:
        assert state["readers"]["st_task_tiny"]["epoch"] >= 1
    resumed = loader()
    resumed.load_state_dict(state)
    assert batches(resumed, 12) == full[point:]


def test_resume_refuses_a_state_with_the_other_shuffle_setting(shard_root: Path) -> None:
    state = build_stream(MIX, shard_root, seed=8, batch_size=4).state_dict()
    other = build_stream(MIX, shard_root, seed=8, batch_size=4, shuffle_within_shard=False)
    with pytest.raises(ConfigError, match="shuffle_within_shard: saved True, now False"):
        other.load_state_dict(state)


def test_index_reads_the_same_records_as_the_tar_stream(shard_root: Path, tmp_path: Path):
    shard = split_shards(shard_root, "st_many", "train")[3]
    index = index_shard(shard.path, shard.count)
    assert index.problem is None and len(index.samples) == shard.count
    with open(shard.path, "rb") as file:
        by_index = [read_indexed(file, index, k, shard.count) for k in reversed(range(20))]
    assert by_index[::-1] == list(iter_shard(shard.path))
    # a truncated copy keeps the samples before the cut; the lost ones name the shard
    cut = tmp_path / "cut.tar"
    cut.write_bytes(shard.path.read_bytes()[: shard.path.stat().st_size // 2])
    damaged = index_shard(cut, shard.count)
    assert 0 < len(damaged.samples) < shard.count and "truncated" in damaged.problem
    with open(cut, "rb") as file, pytest.raises(DataError, match=r"cut.tar .*truncated.*lost"):
        read_indexed(file, damaged, shard.count - 1, shard.count)
    with pytest.raises(DataError, match="has 20 samples, its manifest says 5"):
        index_shard(shard.path, 5)
