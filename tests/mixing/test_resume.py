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


def test_state_records_reader_positions_mixer_and_counts(shard_root: Path) -> None:
    stream = build_stream(MIX, shard_root, seed=3, batch_size=3)
    seen = ids(stream, 150)
    state = stream.state_dict()
    assert state["consumed"] == 150 and state["mixer"]["batch"] == 50
    tiny = state["readers"][0]["st_task_tiny"]
    assert tiny["consumed"] == sum(1 for t, _, _ in seen if t == "st_task_tiny") > 30
    assert tiny["epoch"] >= 1  # the tiny task wrapped while the others went on
    assert state["readers"][0]["st_task_many"]["epoch"] == 0
    assert state["counts"] == {t: sum(1 for s, _, _ in seen if s == t) for t in MIX.rates()}


def test_continuing_iteration_after_a_break_is_exact(shard_root: Path) -> None:
    full = ids(build_stream(MIX, shard_root, seed=3, batch_size=3), 100)
    stream = build_stream(MIX, shard_root, seed=3, batch_size=3)
    assert ids(stream, 40) + ids(stream, 60) == full


def test_resume_with_other_world_size_is_refused_or_resharded(shard_root: Path) -> None:
    old = build_stream(MIX, shard_root, seed=3, rank=0, world_size=2, batch_size=3)
    ids(old, 150)
    state = roundtrip(old.state_dict())
    new = build_stream(MIX, shard_root, seed=3, rank=0, world_size=3, batch_size=3)
    with pytest.raises(ConfigError, match=r"world_size: saved 2, now 3.*reshard=True"):
        new.load_state_dict(state)
    new.load_state_dict(state, reshard=True)
    furthest = {task: max(r[task]["epoch"] for r in state["readers"]) for task in MIX.rates()}
    after = new.state_dict()
    assert after["generation"] == 1
    for task, epoch in furthest.items():  # every task restarts at its next epoch boundary
        assert after["readers"][0][task] == {
            "consumed": 0,
            "epoch": epoch + 1,
            "shard_pos": 0,
            "shard": after["readers"][0][task]["shard"],
            "offset": after["readers"][0][task]["offset"],
        }
    assert after["counts"] == state["counts"]
    # deterministic from there, and itself exactly resumable
    twin = build_stream(MIX, shard_root, seed=3, rank=0, world_size=3, batch_size=3)
    twin.load_state_dict(state, reshard=True)
    head = ids(new, 50)
    assert head == ids(twin, 50)
    again = build_stream(MIX, shard_root, seed=3, rank=0, world_size=3, batch_size=3)
    again.load_state_dict(roundtrip(new.state_dict()))
    assert ids(again, 30) == ids(twin, 30)
    assert sum(new.counts().values()) == sum(state["counts"].values()) + 3 * 50


def test_resume_refuses_other_seed_batch_or_workers(shard_root: Path) -> None:
    state = build_stream(MIX, shard_root, seed=3, batch_size=3).state_dict()
    for kwargs, key in (
        ({"seed": 4, "batch_size": 3}, "seed"),
        ({"seed": 3, "batch_size": 4}, "batch_size"),
        ({"seed": 3, "batch_size": 3, "num_workers": 2}, "num_workers"),
    ):
        with pytest.raises(ConfigError, match=key):
            build_stream(MIX, shard_root, **kwargs).load_state_dict(state)
    with pytest.raises(ConfigError, match="not a stream state"):
        build_stream(MIX, shard_root, seed=3, batch_size=3).load_state_dict({"format": 99})
