"""Samples inside a shard come in a seeded per-epoch permutation; coverage and resume stay exact."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from pathlib import Path

import pytest

from generalist.catalog.mixture import mixture_from_rates
from generalist.errors import ConfigError, DataError
from generalist.mixing.shares import TaskShares, slot_records
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


@pytest.mark.parametrize(("dataset", "slots"), [("st_many", 4), ("st_few", 4), ("st_few", 2)])
def test_slots_cover_every_record_once_per_epoch(shard_root: Path, dataset: str, slots: int):
    """Ranks x workers = `slots` readers; st_few (3 shards) is striped over 4 of them."""
    shards = split_shards(shard_root, dataset, "train")
    layout = TaskShares(dataset, shards, seed=2, slots=slots)
    everything = sorted(r.id for r in read_records(shard_root, dataset, "train"))
    for epoch in range(2):
        seen = [
            record.id
            for slot in range(slots)
            for _, _, record in slot_records(layout, slot, 0, first_epoch=epoch, epochs=1)
        ]
        assert sorted(seen) == everything  # disjoint (no duplicate) and complete
    # positions map to a permutation: the striped slots do not read in written order
    slot0 = [r.id for _, _, r in slot_records(layout, 0, 0, epochs=1)]
    assert [index_of(i) for i in slot0] != sorted(index_of(i) for i in slot0)


def test_two_ranks_two_workers_cover_a_striped_task(shard_root: Path, first_epoch_ids) -> None:
    ids, layouts = first_epoch_ids(mixture_from_rates("few", {"st_task_few": 1.0}), 3, 10)
    assert all(layout.striped for layout in layouts)
    assert Counter(ids) == Counter(r.id for r in read_records(shard_root, "st_few", "train"))


@pytest.mark.parametrize("schedule", ["stratified", "iid"])
@pytest.mark.parametrize("point", [3, 41])
def test_two_workers_resume_mid_shard_and_after_a_wrap(
    shard_root: Path, point: int, schedule: str
) -> None:
    """Batch 3: mid-shard everywhere; batch 41: st_tiny (15 records per slot) has wrapped."""

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
    readers = [slot["st_task_many"] for slot in state["readers"]]
    assert any(r["offset"] > 0 for r in readers)  # a reader stands inside a shard
    if point == 41:
        assert max(slot["st_task_tiny"]["epoch"] for slot in state["readers"]) >= 1
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
