"""The stream in a torch DataLoader with 2 workers: disjoint workers, exact resume."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from torch.utils.data import DataLoader

from generalist.catalog.mixture import mixture_from_rates
from generalist.errors import ConfigError
from generalist.mixing.stream import build_stream
from generalist.shards.manifest import read_records

MIX = mixture_from_rates(
    "m", {"st_task_many": 3.0, "st_task_few": 1.0, "st_task_tiny": 1.0}, min_per_batch=1
)


def make(**kwargs):
    return build_stream(MIX, kwargs.pop("root"), seed=11, batch_size=4, num_workers=2, **kwargs)


def batches(loader, n: int) -> list[list[str]]:
    return [[e.id for e in batch] for batch in itertools.islice(iter(loader), n)]


@pytest.mark.parametrize("schedule", ["stratified", "iid"])
def test_two_workers_exact_resume_and_counts(shard_root: Path, schedule: str) -> None:
    full = batches(make(root=shard_root, schedule=schedule).dataloader(), 40)
    assert len({len(b) for b in full}) == 1
    stream = make(root=shard_root, schedule=schedule)
    loader = stream.dataloader()
    head = batches(loader, 13)  # odd: the resumed run starts on the other worker's slot
    state = json.loads(json.dumps(loader.state_dict()))
    assert state["consumed"] == 13 * 4
    assert sum(state["counts"].values()) == 52
    resumed = make(root=shard_root, schedule=schedule).dataloader()
    resumed.load_state_dict(state)
    assert head + batches(resumed, 27) == full
    # the same loader, iterated again after the break, also continues exactly
    assert batches(loader, 27) == full[13:]


def test_ranks_and_workers_read_the_split_once(shard_root: Path, global_batches) -> None:
    """One task, 2 ranks x 2 workers, global batch 10: 20 global batches are the split, once."""
    ids = list(
        itertools.chain.from_iterable(
            global_batches(mixture_from_rates("one", {"st_task_many": 1.0}), 2, 5, 2, 20)
        )
    )
    assert sorted(ids) == sorted(r.id for r in read_records(shard_root, "st_many", "train"))


def test_worker_count_must_match_the_build(shard_root: Path) -> None:
    stream = make(root=shard_root)
    with pytest.raises(ConfigError, match="num_workers=2 runs in a DataLoader with 0 workers"):
        next(iter(DataLoader(stream, batch_size=4, collate_fn=list)))
    with pytest.raises(ConfigError, match="persistent_workers"):
        stream.dataloader(persistent_workers=True)


def test_resume_from_zero_to_two_workers_continues_the_same_sequence(shard_root: Path) -> None:
    """Workers only decide who builds a batch: a state saved without workers resumes with two
    exactly, no reshard needed, and says so in one line."""
    single = build_stream(MIX, shard_root, seed=11, batch_size=4)
    full = [e.id for e in itertools.islice(iter(single), 72)]
    single = build_stream(MIX, shard_root, seed=11, batch_size=4)
    list(itertools.islice(iter(single), 40))
    state = json.loads(json.dumps(single.state_dict()))
    two = make(root=shard_root)
    two.load_state_dict(state)
    assert two.last_resume == (
        "stream resumed with num_workers 0 -> 2: continues with the same global sequence"
    )
    assert list(itertools.chain.from_iterable(batches(two.dataloader(), 8))) == full[40:]
    assert sum(two.counts().values()) == 40 + 8 * 4
