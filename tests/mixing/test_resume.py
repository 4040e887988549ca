"""Exact resume: state_dict/load_state_dict give the sequence an uninterrupted run sees."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from generalist.catalog.mixture import mixture_from_rates
from generalist.errors import ConfigError
from generalist.mixing.stream import build_stream

MIX = mixture_from_rates(
    "m", {"st_task_many": 3.0, "st_task_few": 1.0, "st_task_tiny": 1.0}, min_per_batch=1
)


def ids(stream, n: int) -> list[tuple[str, str, int]]:
    return [(e.task, e.id, e.template_index) for e in itertools.islice(iter(stream), n)]


def roundtrip(state: dict) -> dict:
    return json.loads(json.dumps(state))  # the state is plain JSON


@pytest.mark.parametrize("schedule", ["stratified", "iid"])
@pytest.mark.parametrize("world", [1, 2])
def test_resume_from_several_points_matches_uninterrupted(
    shard_root: Path, world: int, schedule: str
) -> None:
    def make(rank: int):
        return build_stream(
            MIX, shard_root, seed=3, rank=rank, world_size=world, batch_size=3, schedule=schedule
        )

    full = {rank: ids(make(rank), 400) for rank in range(world)}
    # 7: mid-batch, mid-epoch; 150: st_tiny (15-30 records per slot) has wrapped
    for point in (7, 150, 301):
        states = []
        for rank in range(world):
            stream = make(rank)
            assert ids(stream, point) == full[rank][:point]
            states.append(roundtrip(stream.state_dict()))
        assert all(s == states[0] for s in states)  # the same on every rank: save rank 0's
        for rank in range(world):
            resumed = make(rank)
            resumed.load_state_dict(states[0])
            assert ids(resumed, 400 - point) == full[rank][point:], (rank, point)


def test_state_records_next_records_mixer_and_counts(shard_root: Path) -> None:
    stream = build_stream(MIX, shard_root, seed=3, batch_size=3)
    seen = ids(stream, 150)
    state = stream.state_dict()
    assert state["consumed"] == 150 and state["mixer"]["batch"] == 50
    assert state["position"] == 150
    tiny = state["readers"]["st_task_tiny"]
    assert tiny["next"] == sum(1 for t, _, _ in seen if t == "st_task_tiny") > 30
    assert tiny["epoch"] == tiny["next"] // 30 >= 1  # the tiny task wrapped, the others go on
    assert state["readers"]["st_task_many"]["epoch"] == 0
    assert state["counts"] == {t: sum(1 for s, _, _ in seen if s == t) for t in MIX.rates()}


def test_continuing_iteration_after_a_break_is_exact(shard_root: Path) -> None:
    full = ids(build_stream(MIX, shard_root, seed=3, batch_size=3), 100)
    stream = build_stream(MIX, shard_root, seed=3, batch_size=3)
    assert ids(stream, 40) + ids(stream, 60) == full


@pytest.mark.parametrize("schedule", ["stratified", "iid"])
def test_the_global_sequence_does_not_depend_on_world_size(
    shard_root: Path, global_batches, schedule: str
) -> None:
    """Global batch 6 as 1 x 6, 2 x 3, 3 x 2 (with workers or not): one global sequence, and a
    state saved at one world size resumes at another exactly (elastic resume)."""
    one = global_batches(MIX, 1, 6, 0, 30, seed=3, schedule=schedule)
    assert global_batches(MIX, 2, 3, 2, 30, seed=3, schedule=schedule) == one
    old = [
        build_stream(MIX, shard_root, seed=3, rank=r, world_size=3, batch_size=2, schedule=schedule)
        for r in range(3)
    ]
    for stream in old:  # 12 global batches of 6
        assert len(ids(stream, 2 * 12)) == 24
    state = roundtrip(old[0].state_dict())
    assert state["position"] == 72
    resumed = global_batches(MIX, 2, 3, 2, 18, state=state, seed=3, schedule=schedule)
    assert resumed == one[12:]
    line = build_stream(MIX, shard_root, seed=3, world_size=2, batch_size=3, schedule=schedule)
    line.load_state_dict(state)
    assert line.last_resume == (
        "stream resumed with world_size 3 -> 2, batch_size 2 -> 3: continues with the same "
        "global sequence"
    )


def test_another_global_batch_continues_every_task_at_its_next_record(shard_root: Path) -> None:
    old = build_stream(MIX, shard_root, seed=3, rank=0, world_size=1, batch_size=6)
    ids(old, 6 * 25)
    state = roundtrip(old.state_dict())
    new = build_stream(MIX, shard_root, seed=3, rank=0, world_size=1, batch_size=4)
    new.load_state_dict(state)
    assert new.last_resume == (
        "stream resumed with batch_size 6 -> 4: continues with the next global position"
    )
    after = ids(new, 200)
    for plan in new.plans:  # each task's records go on from where they stood: no epoch restart
        task, k = plan.task.name, state["readers"][plan.task.name]["next"]
        got = [i for t, i, _ in after if t == task]
        order = plan.layout
        expected = [_record_id(plan, order.locate(k + n)) for n in range(len(got))]
        assert got == expected, task
    assert sum(new.counts().values()) == 150 + 200
    # and it is itself exactly resumable
    again = build_stream(MIX, shard_root, seed=3, rank=0, world_size=1, batch_size=4)
    again.load_state_dict(roundtrip(new.state_dict()))
    twin = build_stream(MIX, shard_root, seed=3, rank=0, world_size=1, batch_size=4)
    twin.load_state_dict(state)
    ids(twin, 200)
    assert ids(again, 30) == ids(twin, 30)


def _record_id(plan, where) -> str:
    """The id of the record at `where` (its dataset's written order)."""
    dataset = plan.task.dataset
    per_shard = plan.layout.shards[0].count
    return f"{dataset}-train-{where.shard * per_shard + where.sample}"


def test_reshard_restarts_every_task_at_its_next_epoch(shard_root: Path) -> None:
    old = build_stream(MIX, shard_root, seed=3, batch_size=3)
    ids(old, 150)
    state = roundtrip(old.state_dict())
    new = build_stream(MIX, shard_root, seed=4, batch_size=3)
    with pytest.raises(ConfigError, match=r"seed: saved 3, now 4.*reshard=True"):
        new.load_state_dict(state)
    new.load_state_dict(state, reshard=True)
    after = new.state_dict()
    assert after["generation"] == 1
    for plan in new.plans:
        task, total = plan.task.name, plan.layout.total
        begun = -(-state["readers"][task]["next"] // total)
        assert after["readers"][task]["next"] == begun * total  # the next epoch boundary
    assert after["counts"] == state["counts"]
    twin = build_stream(MIX, shard_root, seed=4, batch_size=3)
    twin.load_state_dict(state, reshard=True)
    assert ids(new, 50) == ids(twin, 50)


def test_resume_refuses_another_seed_and_a_foreign_state(shard_root: Path) -> None:
    state = build_stream(MIX, shard_root, seed=3, batch_size=3).state_dict()
    with pytest.raises(ConfigError, match="seed"):
        build_stream(MIX, shard_root, seed=4, batch_size=3).load_state_dict(state)
    with pytest.raises(ConfigError, match="not a stream state"):
        build_stream(MIX, shard_root, seed=3, batch_size=3).load_state_dict({"format": 99})
    inside = build_stream(MIX, shard_root, seed=3, batch_size=3)
    ids(inside, 7)
    with pytest.raises(ConfigError, match=r"inside a batch .* needs a whole batch"):
        build_stream(MIX, shard_root, seed=3, batch_size=4).load_state_dict(inside.state_dict())
