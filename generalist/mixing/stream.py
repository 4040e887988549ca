"""The mixture stream: proportional, deterministic, resumable examples from shards.

    stream = build_stream("demo", shard_root, "train", seed=0, rank=rank, world_size=world,
                          batch_size=8, num_workers=2)
    loader = stream.dataloader(collate_fn=collate)   # a torch DataLoader that keeps count
    for step, batch in enumerate(loader): ...
        checkpoint["data"] = loader.state_dict()      # plain JSON; identical on every rank
    # after a restart, before iterating:
    loader.load_state_dict(checkpoint["data"])       # then iterate: exactly the same batches
    stream.realized_rates()  # {task: fraction seen}  vs  stream.target_rates

What it yields: `generalist.catalog.records.Example`s, formatted by `exemplars.format_example`
(epoch 0 exactly as `generalist render --seed SEED` shows; later epochs draw other paraphrases
and exemplars from a seed derived from (seed, epoch)). The shard root may be a URL (s3://,
gs://, https://, anything fsspec opens; see generalist/shards/storage.py).

How: mixing.schedule picks the task of every position of the global sequence; this rank takes
[rank*B, (rank+1)*B) of every global batch of B*world_size; rank-local batch g is built by the
DataLoader worker of virtual slot g % num_workers; mixing.shares gives each (rank, slot) a
disjoint share of every task's shards, reshuffled per (seed, task, epoch), read by seeking
through a tar index; a task that runs out starts its next epoch alone.

State and resume: the schedule is a pure function of the position, so the state is "how many
examples this rank consumed" plus, derived from it, each (rank, slot) reader's records consumed
per task, its (epoch, shard, offset), the mixer's window and the per-task counts. The
DataLoader prefetches, so `stream.dataloader()` counts the batches the loop actually received
(num_workers=0: the stream counts its own yields). `load_state_dict` restores the readers by
arithmetic (each seeks straight to its next sample): nothing is replayed, and a remote shard a
reader has finished is not fetched again. The state is the same on every rank.

What may change between save and resume: nothing by default (seed, mixture, rates, schedule,
split, world size, workers, batch size, shuffle_within_shard and the shards' checksums are
checked; a difference is a ConfigError naming it). `load_state_dict(state, reshard=True)`
accepts a different world size, worker count, batch size or mixture: every task restarts at
its next epoch boundary, counts carry over, and the run is again deterministic from there.

min_per_batch: see generalist/mixing/schedule.py. Bad samples: a DataError naming shard and key;
with skip_bad=True a bad sample is replaced by a fixed substitute record of the same task and
reported through `warnings`. train=False: an evaluation stream: each task's share of the split
once, tasks in mixture order, template 0, no mixing and no state.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from generalist.catalog.exemplars import DEFAULT_POOL_SIZE, format_example
from generalist.catalog.mixture import MIXTURES, Mixture
from generalist.catalog.records import Example
from generalist.errors import ConfigError
from generalist.mixing.plan import TaskPlan, check_inputs, plan_tasks, resolve_schedule
from generalist.mixing.progress import StreamProgress
from generalist.mixing.schedule import make_schedule
from generalist.mixing.shares import segment_records, slot_records
from generalist.mixing.workers_counted import counted
from generalist.seeds import stable_seed
from generalist.shards.cache import ShardCache

__all__ = ["MixtureStream", "StreamLoader", "build_stream"]


class MixtureStream(IterableDataset):
    """An IterableDataset of Examples for one rank; build it with `build_stream`."""

    def __init__(
        self,
        mixture: Mixture,
        plans: list[TaskPlan],
        rates: dict[str, float],
        config: dict[str, Any],
        skip_bad: bool,
    ) -> None:
        self.mixture, self.plans, self.config = mixture, plans, config
        self.target_rates: dict[str, float] = dict(rates)
        self.seed: int = config["seed"]
        self.rank: int = config["rank"]
        self.world_size: int = config["world_size"]
        self.num_workers: int = config["num_workers"]
        self.batch_size: int | None = config["batch_size"]
        self.train: bool = config["train"]
        self.skip_bad = skip_bad
        self.skipped = 0  # bad samples consumed (StreamLoader adds those its workers met)
        names, global_batch = [p.task.name for p in plans], self.rank_batch * self.world_size
        # a generation's schedule: make(generation), the same in every process
        args = (config["schedule"], names, self.target_rates, self.seed, global_batch)
        make = partial(make_schedule, *args, mixture.min_per_batch)
        self.progress = StreamProgress(names, make, self.rank_batch, self.world_size, self.slots)

    # -- geometry --------------------------------------------------------------------------
    @property
    def rank_batch(self) -> int:
        return self.batch_size or 1

    @property
    def slots(self) -> int:
        """Reader slots per rank (one per dataloader worker)."""
        return max(1, self.num_workers)

    # -- iteration -------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Example]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if workers != self.slots:
            raise ConfigError(
                f"stream built for num_workers={self.num_workers} runs in a DataLoader with "
                f"{workers if info else 0} workers; pass the same number to build_stream, or "
                f"use stream.dataloader()"
            )
        if not self.train:
            return self._eval_examples(self.rank * self.slots + worker)
        return self._train_examples(worker, in_process=info is None)

    def _train_examples(self, worker: int, in_process: bool) -> Iterator[Example]:
        progress, batch = self.progress, self.rank_batch
        progress.catch_up()
        consumed = progress.consumed
        if self.slots > 1 and consumed % batch:
            raise ConfigError(f"resume point {consumed} is not a multiple of batch {batch}")
        first_batch = consumed // batch + worker
        virtual = first_batch % self.slots  # the slot this process plays, whatever restarted it
        slot = self.rank * self.slots + virtual
        readers = [  # by label: the schedule's tasks are the plans' tasks, in order
            self._reader(p, slot, progress.slot_count(slot, p.task.name)) for p in self.plans
        ]
        schedule = progress.schedule
        g, b = first_batch, consumed % batch
        while True:
            labels = schedule.batch(g)[self.rank * batch : (self.rank + 1) * batch]
            for label in labels[b:]:
                example = next(readers[label])
                if in_process:
                    progress.consumed += 1  # no prefetch in-process: a yield is a consumption
                yield example
            g, b = g + self.slots, 0

    def _reader(self, plan: TaskPlan, slot: int, consumed: int) -> Iterator[Example]:
        first_epoch = self.progress.epoch_base.get(plan.task.name, 0)
        records = slot_records(
            plan.layout, slot, consumed, first_epoch, self.skip_bad, self._on_bad
        )
        seeds = {0: self.seed}  # the formatting seed of each epoch (a hash: computed once)
        for epoch, index, record in records:
            if record is None:
                record = plan.substitute(self.seed, epoch, slot, index)
            if epoch not in seeds:
                seeds[epoch] = stable_seed(self.seed, "epoch", epoch)
            yield format_example(plan.task, record, plan.pool, seed=seeds[epoch], train=True)

    def _eval_examples(self, slot: int) -> Iterator[Example]:
        for plan in self.plans:
            for seg in plan.layout.segments(0, slot):
                records = segment_records(plan.layout, 0, seg, 0, self.skip_bad, self._on_bad)
                for record in records:
                    if record is not None:
                        yield format_example(plan.task, record, plan.pool, self.seed, train=False)

    def _on_bad(self, message: str) -> None:
        self.skipped += 1
        warnings.warn(f"skipped bad sample: {message}", stacklevel=2)

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """JSON-able state after the examples consumed so far (the same on every rank)."""
        self._check_train("state_dict")
        return self.progress.state_dict(self.config, self._positions)

    def load_state_dict(self, state: Mapping[str, Any], reshard: bool = False) -> None:
        """Continue exactly where `state` was taken (see the module docstring for `reshard`)."""
        self._check_train("load_state_dict")
        self.progress.load_state_dict(state, self.config, reshard, self._positions)

    def _positions(self, slot: int, task: str, consumed: int) -> dict[str, int]:
        plan = next(p for p in self.plans if p.task.name == task)
        first_epoch = self.progress.epoch_base.get(task, 0)
        position, _ = plan.layout.locate(consumed, slot, first_epoch)
        return {
            "consumed": consumed,
            "epoch": position.epoch,
            "shard_pos": position.shard_pos,
            "shard": position.shard,
            "offset": position.offset,
        }

    def advance(self, examples: int) -> None:
        """Record that the training loop received `examples` more examples (StreamLoader)."""
        self.progress.consumed += examples

    def counts(self, scope: str = "global") -> dict[str, int]:
        """Examples consumed per task: by all ranks ("global") or by this rank ("rank")."""
        self._check_train("counts")
        return self.progress.counts(scope, self.rank)

    def realized_rates(self, scope: str = "global") -> dict[str, float]:
        """Fraction of consumed examples per task (log next to `target_rates`)."""
        counts = self.counts(scope)
        total = sum(counts.values())
        return {t: (c / total if total else 0.0) for t, c in counts.items()}

    def dataloader(self, collate_fn: Callable | None = None, **kwargs: object) -> StreamLoader:
        """A DataLoader over this stream that counts what the loop consumed (see module doc)."""
        return StreamLoader(self, collate_fn, **kwargs)

    def _check_train(self, what: str) -> None:
        if not self.train:
            raise ConfigError(f"{what}() is for training streams; evaluation streams are finite")


class StreamLoader:
    """torch DataLoader over a MixtureStream; state_dict() reflects batches actually received."""

    def __init__(
        self, stream: MixtureStream, collate_fn: Callable | None, **kwargs: object
    ) -> None:
        if kwargs.get("persistent_workers"):
            raise ConfigError("persistent_workers would keep stale reader state; leave it off")
        self.stream = stream
        self.kwargs = {"collate_fn": collate_fn or list, **kwargs}

    def __iter__(self) -> Iterator[Any]:
        stream = self.stream
        if stream.train:
            stream.progress.catch_up()  # workers start from the main process's current state
        workers = stream.num_workers > 0
        # with workers each batch comes with the bad samples its worker met (workers_counted)
        dataset, kwargs = counted(stream, self.kwargs) if workers else (stream, self.kwargs)
        loader = DataLoader(dataset, stream.batch_size, num_workers=stream.num_workers, **kwargs)
        for batch in loader:
            if workers:
                skipped, batch = batch
                stream.skipped += skipped  # a worker's count reaches us with its batch
                if stream.train:
                    stream.advance(stream.rank_batch)  # in-process streams count their yields
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return self.stream.state_dict()

    def load_state_dict(self, state: Mapping[str, Any], reshard: bool = False) -> None:
        self.stream.load_state_dict(state, reshard=reshard)


def build_stream(
    mixture: Mixture | str,
    shard_root: Path | str,
    split: str = "train",
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    *,
    batch_size: int | None = None,
    num_workers: int = 0,
    train: bool = True,
    skip_bad: bool = False,
    exemplar_pool_size: int = DEFAULT_POOL_SIZE,
    shuffle_within_shard: bool = True,
    schedule: str | None = None,
    shard_cache: ShardCache | None = None,
) -> MixtureStream:
    """Check everything (names, rates, shards) and build this rank's stream.

    batch_size: examples per rank per step (the DataLoader's batch size); needed with workers
    and for min_per_batch to mean "per global batch of batch_size x world_size".
    shuffle_within_shard: training streams read each shard's samples in a per-(seed, task,
    epoch, shard) permutation; False keeps the written order (evaluation streams always do).
    schedule: "stratified" or "iid" (default: the mixture's; see generalist/mixing/schedule.py).
    shard_root may be a URL; shard_cache says how its shards are read (generalist.shards.cache).
    """
    mixture = MIXTURES.get(mixture) if isinstance(mixture, str) else mixture
    check_inputs(mixture, rank, world_size, batch_size, num_workers, train)
    kind, slots = resolve_schedule(mixture, schedule), world_size * max(1, num_workers)
    within = train and shuffle_within_shard
    where = (split, seed, slots, train, skip_bad, exemplar_pool_size, within, shard_cache)
    plans, rates = plan_tasks(mixture, shard_root, *where)
    config = {
        "seed": seed,
        "rank": rank,
        "world_size": world_size,
        "num_workers": num_workers,
        "batch_size": batch_size,
        "split": split,
        "train": train,
        "mixture": mixture.name,
        "rates": rates,
        "min_per_batch": mixture.min_per_batch,
        "shards": {p.task.name: p.fingerprint for p in plans},
        "shuffle_within_shard": within,
        "schedule": kind,
    }
    return MixtureStream(mixture, plans, rates, config, skip_bad)
