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

How: mixing.schedule picks the task of every position of the global sequence and deals each
global batch of B = batch_size x world_size in a seeded random order; this rank takes
[rank*b, (rank+1)*b) of every global batch; rank-local batch g is built by DataLoader worker
g % num_workers. The k-th example of a task in the global sequence is record k of the task's
endless, per-epoch reshuffled order (mixing.shares), read by seeking through a tar index by
whichever rank and worker it was dealt to: readers take turns over the records, so an epoch of
the global sequence reads every record once at any world size, also with fewer records than
readers, and a task that runs out starts its next epoch alone.

State and resume: the schedule is a pure function of the position, so the state is "how many
examples this rank consumed" plus, derived from it, the per-task counts and each task's next
record position (epoch, shard, offset). The DataLoader prefetches, so `stream.dataloader()`
counts the batches the loop actually received (num_workers=0: the stream counts its own
yields). `load_state_dict` restores by arithmetic: nothing is replayed. The state is the same on
every rank. What may change between save and resume (generalist/mixing/progress.py): world
size, batch size and workers freely (the same global batch continues the same global sequence;
another global batch continues from the next global position); seed, mixture, rates, schedule,
split, shuffle_within_shard and the shards' checksums only with
`load_state_dict(state, reshard=True)`, which restarts every task at its next epoch boundary.
`stream.last_resume` says in one line what changed.

min_per_batch: see generalist/mixing/schedule.py. Bad samples: a DataError naming shard and key;
with skip_bad=True a bad sample is replaced by a fixed substitute record of the same task and
reported through `warnings`; a sample whose image fails to decode in the collator is dropped
there and counted in the same `skipped` (`note_bad`). train=False: an evaluation stream: each
task's share of the split
once, tasks in mixture order, template 0, no mixing and no state.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path

from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from generalist.catalog.exemplars import DEFAULT_POOL_SIZE, format_example
from generalist.catalog.mixture import MIXTURES, Mixture
from generalist.catalog.records import Example
from generalist.errors import ConfigError
from generalist.mixing.plan import (
    StreamConfig,
    TaskPlan,
    check_inputs,
    plan_tasks,
    resolve_schedule,
)
from generalist.mixing.progress import CHECKED, GEOMETRY, StreamProgress
from generalist.mixing.schedule import make_schedule
from generalist.mixing.shares import Reader
from generalist.seeds import stable_seed
from generalist.shards.cache import ShardCache

__all__ = ["MixtureStream", "StreamLoader", "build_stream"]
Batch = object  # whatever the collate_fn returns


class MixtureStream(IterableDataset):
    """An IterableDataset of Examples for one rank; build it with `build_stream`."""

    def __init__(
        self,
        mixture: Mixture,
        plans: list[TaskPlan],
        rates: dict[str, float],
        config: StreamConfig,
    ) -> None:
        self.mixture, self.plans, self.config = mixture, plans, config
        self.target_rates: dict[str, float] = dict(rates)
        self.seed, self.rank, self.world_size = config.seed, config.rank, config.world_size
        self.num_workers, self.batch_size = config.num_workers, config.batch_size
        self.train, self.skip_bad = config.train, config.skip_bad
        self.skipped = 0  # bad samples consumed (StreamLoader adds those its workers met)
        names = [p.task.name for p in plans]
        # a generation's schedule: make(generation), the same in every process
        make = partial(
            make_schedule,
            config.schedule,
            names,
            self.target_rates,
            self.seed,
            config.global_batch,
            config.min_per_batch,
        )
        self.progress = StreamProgress(names, make, config)
        identity = {**config.as_dict(), "rates": self.target_rates}
        identity["shards"] = {p.task.name: p.fingerprint for p in plans}
        self.identity = {k: identity[k] for k in CHECKED + GEOMETRY}

    # -- geometry --------------------------------------------------------------------------
    @property
    def rank_batch(self) -> int:
        return self.config.rank_batch

    @property
    def slots(self) -> int:
        """Reader processes per rank (one per dataloader worker)."""
        return self.config.slots

    @property
    def last_resume(self) -> str | None:
        """One line on what the last load_state_dict changed (None: nothing)."""
        return self.progress.last_resume

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
        progress, batch, rank = self.progress, self.rank_batch, self.rank
        consumed = progress.consumed
        if self.slots > 1 and consumed % batch:
            raise ConfigError(f"resume point {consumed} is not a multiple of batch {batch}")
        readers = [Reader(p.layout, self.skip_bad, self.note_bad) for p in self.plans]
        offsets = [progress.offsets[p.task.name] for p in self.plans]
        seeds = {0: self.seed}  # the formatting seed of each epoch (a hash: computed once)
        schedule = progress.schedule
        g, b = consumed // batch + worker, consumed % batch
        while True:
            labels = schedule.batch(g)[rank * batch : (rank + 1) * batch]
            ks = schedule.occurrences(g, rank * batch, (rank + 1) * batch)
            for label, k in zip(labels[b:], ks[b:]):
                plan, k = self.plans[label], k + offsets[label]
                where, record = readers[label].read(k)
                if record is None:
                    record = plan.substitute(self.seed, k)
                if where.epoch not in seeds:
                    seeds[where.epoch] = stable_seed(self.seed, "epoch", where.epoch)
                example = format_example(plan.task, record, plan.pool, seeds[where.epoch], True)
                if in_process:
                    progress.consumed += 1  # no prefetch in-process: a yield is a consumption
                yield example
            g, b = g + self.slots, 0

    def _eval_examples(self, slot: int) -> Iterator[Example]:
        """Each task's split once, in written order, records slot, slot + slots, ... of it."""
        slots = self.world_size * self.slots
        for plan in self.plans:
            reader = Reader(plan.layout, self.skip_bad, self.note_bad)
            for k in range(slot, plan.layout.total, slots):
                _, record = reader.read(k)
                if record is not None:
                    yield format_example(plan.task, record, plan.pool, self.seed, train=False)
            reader.close()

    def note_bad(self, message: str) -> None:
        """Count a bad sample and say so in a warning line (with skip_bad): one the shard
        reader met, or one a later stage dropped (the collator's undecodable images)."""
        self.skipped += 1
        warnings.warn(f"skipped bad sample: {message}", stacklevel=2)

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, object]:
        """JSON-able state after the examples consumed so far (the same on every rank)."""
        self._check_train("state_dict")
        return self.progress.state_dict(self.identity, self._where)

    def load_state_dict(self, state: Mapping[str, object], reshard: bool = False) -> None:
        """Continue exactly where `state` was taken (see the module docstring for `reshard`)."""
        self._check_train("load_state_dict")
        totals = {p.task.name: p.layout.total for p in self.plans}
        self.progress.load_state_dict(state, self.identity, reshard, totals)

    def _where(self, task: str, k: int) -> dict[str, int]:
        plan = next(p for p in self.plans if p.task.name == task)
        where, total = plan.layout.locate(k), plan.layout.total
        return {
            "next": k,
            "epoch": where.epoch,
            "shard": where.shard,
            "offset": where.offset,
            "epochs_begun": -(-k // total),
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


# Bad samples met inside DataLoader workers are counted in the main process: a worker runs its
# own copy of the stream, and what it counts (`stream.skipped`) dies with the copy. So workers
# run over `Counted(stream)`, which yields each example with the bad samples met since the one
# before, and a collate_fn hands (skipped, batch) back; the main process adds `skipped` as each
# batch arrives, so the count covers what the loop consumed, from every worker.
class Counted(IterableDataset):
    """(example, bad samples met since the previous example) from the stream it wraps."""

    def __init__(self, stream: MixtureStream) -> None:
        self.stream = stream

    def __iter__(self) -> Iterator[tuple[Example, int]]:
        seen = self.stream.skipped
        for example in self.stream:
            yield example, self.stream.skipped - seen
            seen = self.stream.skipped


class CountedCollate:
    """collate_fn over (example, skipped) pairs -> (skipped in the batch, collate(examples));
    a class, not a closure, so that spawned workers can unpickle it."""

    def __init__(self, collate: Callable) -> None:
        self.collate = collate

    def __call__(self, items: list[tuple[Example, int]]) -> tuple[int, Batch]:
        return sum(n for _, n in items), self.collate([example for example, _ in items])


class StreamLoader:
    """torch DataLoader over a MixtureStream; state_dict() reflects batches actually received."""

    def __init__(
        self, stream: MixtureStream, collate_fn: Callable | None, **kwargs: object
    ) -> None:
        if kwargs.get("persistent_workers"):
            raise ConfigError("persistent_workers would keep stale reader state; leave it off")
        self.stream = stream
        self.collate = collate_fn or list
        self.kwargs = kwargs

    def __iter__(self) -> Iterator[Batch]:
        stream = self.stream
        if stream.train:
            stream.progress.catch_up()  # workers start from the main process's current state
        workers = stream.num_workers > 0
        dataset: IterableDataset = Counted(stream) if workers else stream
        collate = CountedCollate(self.collate) if workers else self.collate
        loader = DataLoader(
            dataset,
            stream.batch_size,
            num_workers=stream.num_workers,
            collate_fn=collate,
            **self.kwargs,  # type: ignore[arg-type]
        )
        for batch in loader:
            if workers:
                skipped, batch = batch
                stream.skipped += skipped  # a worker's count reaches us with its batch
                if stream.train:
                    stream.advance(stream.rank_batch)  # in-process streams count their yields
            yield batch

    def state_dict(self) -> dict[str, object]:
        return self.stream.state_dict()

    def load_state_dict(self, state: Mapping[str, object], reshard: bool = False) -> None:
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
    config = StreamConfig(
        mixture=mixture.name,
        split=split,
        seed=seed,
        rank=rank,
        world_size=world_size,
        batch_size=batch_size,
        num_workers=num_workers,
        train=train,
        skip_bad=skip_bad,
        exemplar_pool_size=exemplar_pool_size,
        shuffle_within_shard=train and shuffle_within_shard,
        schedule=resolve_schedule(mixture, schedule),
        min_per_batch=mixture.min_per_batch,
    )
    check_inputs(config)
    plans, rates = plan_tasks(mixture, shard_root, config, shard_cache)
    return MixtureStream(mixture, plans, rates, config)
