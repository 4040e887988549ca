"""Checks and per-task plans for the stream, done once before any training work.

Every user error is found here, before a model is built: unknown task in the mixture,
negative / all-zero rates, evaluation-only tasks in a training mixture, missing manifest,
split or shard file (the message names the dataset, the path and the `generalist shard`
command to run). A split with fewer records than readers (ranks x workers) is fine: readers
take turns over a task's records (generalist.mixing.shares).

`StreamConfig` carries the stream's settings, frozen, from build_stream to every stage.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import asdict, dataclass, field

from generalist.catalog.exemplars import DEFAULT_POOL_SIZE, ExemplarPool
from generalist.catalog.mixture import SCHEDULES, Mixture
from generalist.catalog.records import Record
from generalist.catalog.task import TASKS, Task
from generalist.errors import ConfigError, DataError, GeneralistError
from generalist.mixing.shares import TaskOrder
from generalist.seeds import stable_seed
from generalist.shards.cache import ShardCache
from generalist.shards.manifest import ShardInfo, load_manifest, read_records, split_shards
from generalist.shards.reader import iter_shard
from generalist.shards.storage import ShardPath, as_root, missing

SUBSTITUTES = 8  # good records kept per task to stand in for bad samples (skip_bad)


@dataclass(frozen=True)
class StreamConfig:
    """A stream's settings (build_stream's arguments, the schedule resolved), frozen."""

    mixture: str
    split: str = "train"
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    batch_size: int | None = None  # examples per rank per step (the DataLoader's batch size)
    num_workers: int = 0
    train: bool = True
    skip_bad: bool = False
    exemplar_pool_size: int = DEFAULT_POOL_SIZE
    shuffle_within_shard: bool = True  # already False for evaluation streams
    schedule: str = "stratified"
    min_per_batch: int = 0

    @property
    def rank_batch(self) -> int:
        """Examples per rank per global batch (1 without a batch size)."""
        return self.batch_size or 1

    @property
    def global_batch(self) -> int:
        return self.rank_batch * self.world_size

    @property
    def slots(self) -> int:
        """Reader processes per rank (one per dataloader worker, or the rank itself)."""
        return max(1, self.num_workers)

    def as_dict(self) -> dict[str, object]:
        """Plain JSON (the stream's state records it)."""
        return asdict(self)


@dataclass
class TaskPlan:
    """What the stream needs for one task: its shard layout, exemplar pool, substitutes."""

    task: Task
    layout: TaskOrder
    pool: ExemplarPool | None
    fingerprint: str  # sha256 over the shard checksums: resume refuses changed data
    substitutes: list[Record] = field(default_factory=list)

    def substitute(self, seed: int, position: int) -> Record:
        """A fixed good record standing in for the bad sample at `position` of the task."""
        if not self.substitutes:
            raise DataError(
                f"task {self.task.name!r}: a bad sample needs a substitute but no good record "
                f"was found in the first shards of dataset {self.task.dataset!r}"
            )
        pick = stable_seed(seed, "substitute", self.task.name, position)
        return self.substitutes[pick % len(self.substitutes)]


def check_inputs(config: StreamConfig) -> None:
    """Geometry checks (ConfigError naming the argument)."""
    rank, world_size, batch_size = config.rank, config.world_size, config.batch_size
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank must be in 0..world_size-1; got rank={rank}, world={world_size}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1 (or None), got {batch_size}")
    if config.num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {config.num_workers}")
    if config.train and config.num_workers > 0 and batch_size is None:
        raise ConfigError(
            "a training stream with dataloader workers needs batch_size (the DataLoader's), "
            "since each worker builds whole batches"
        )


def resolve_schedule(mixture: Mixture, schedule: str | None) -> str:
    """The schedule a stream uses: `schedule`, or the mixture's; ConfigError if unknown."""
    kind = mixture.schedule if schedule is None else schedule
    if kind not in SCHEDULES:
        raise ConfigError(f"schedule must be one of {list(SCHEDULES)}, got {kind!r}")
    return kind


def resolve_tasks(mixture: Mixture, train: bool) -> list[Task]:
    """The mixture's tasks with rate > 0; names checked before anything touches the disk."""
    tasks = []
    for name, rate in mixture.tasks:
        try:
            task = TASKS.get(name)
        except GeneralistError as err:
            raise ConfigError(f"mixture {mixture.name!r}: {err}") from None
        if train and task.train_split is None:
            raise ConfigError(
                f"mixture {mixture.name!r}: task {name!r} is evaluation-only (no train split); "
                f"give it rate 0 or remove it"
            )
        if rate > 0:
            tasks.append(task)
    return tasks


def task_shards(mixture: Mixture, task: Task, root: ShardPath, split: str) -> list[ShardInfo]:
    """The task's shards for `split`, every listed file present and at least one record."""
    where = f"mixture {mixture.name!r}, task {task.name!r}"
    command = f"`generalist shard {task.dataset} --out {root}`"
    try:
        shards = split_shards(root, task.dataset, split)
    except DataError as err:
        raise DataError(f"{where}: {err}") from None
    for path in missing(s.path for s in shards)[:1]:  # remote: one listing, not a request each
        raise DataError(
            f"{where}: shard {path} of dataset {task.dataset!r} listed in its manifest "
            f"is missing; re-run {command}"
        )
    if sum(s.count for s in shards) == 0:
        raise DataError(
            f"{where}: dataset {task.dataset!r} has no {split!r} records under {root}; "
            f"re-run {command} with that split"
        )
    return shards


def fingerprint(shards: list[ShardInfo]) -> str:
    doc = [[s.path.name, s.count, s.sha256] for s in shards]
    return hashlib.sha256(json.dumps(doc).encode()).hexdigest()[:16]


def build_pools(
    tasks: list[Task], root: ShardPath, limit: int, skip_bad: bool
) -> dict[str, ExemplarPool | None]:
    """Exemplar pools (first `limit` good train records), reading each dataset once."""
    pools: dict[str, ExemplarPool | None] = {t.name: None for t in tasks}
    by_dataset: dict[str, list[Task]] = {}
    for task in tasks:
        if task.shots:
            by_dataset.setdefault(task.dataset, []).append(task)
    for dataset, users in by_dataset.items():
        if "train" not in load_manifest(root, dataset)["splits"]:
            raise DataError(
                f"task {users[0].name!r} draws exemplars from the train split of dataset "
                f"{dataset!r}, which is not under {root}; run "
                f"`generalist shard {dataset} --out {root}` with the train split"
            )
        if skip_bad:
            records = first_good(split_shards(root, dataset, "train"), limit)
        else:
            records = list(itertools.islice(read_records(root, dataset, "train"), limit))
        for task in users:
            pools[task.name] = ExemplarPool(task, records, limit=limit)
    return pools


def first_good(shards: list[ShardInfo], n: int) -> list[Record]:
    """The first `n` records that read cleanly (pools and substitutes under skip_bad)."""
    found: list[Record] = []
    for shard in shards:
        records = iter_shard(shard.path, skip_bad=True, count=shard.count)
        found += itertools.islice(records, n - len(found))
        if len(found) >= n:
            break
    return found


def plan_tasks(
    mixture: Mixture, root: ShardPath | str, config: StreamConfig, cache: ShardCache | None = None
) -> tuple[list[TaskPlan], dict[str, float]]:
    """Per-task plans and the normalised target rates, after every check. `root` may be a URL;
    `cache`: how remote shards are read (default: ShardCache() from the environment)."""
    root, train, seed = as_root(root), config.train, config.seed
    tasks = resolve_tasks(mixture, train)
    shards = {t.name: task_shards(mixture, t, root, config.split) for t in tasks}
    counts = {name: sum(s.count for s in found) for name, found in shards.items()}
    try:
        rates = mixture.target_rates(counts, only=counts)
    except GeneralistError as err:
        raise ConfigError(f"mixture {mixture.name!r}: {err}") from None
    tasks = [t for t in tasks if t.name in rates]
    within = train and config.shuffle_within_shard
    pools = build_pools(tasks, root, config.exemplar_pool_size, config.skip_bad)
    plans = [
        TaskPlan(
            task=t,
            layout=TaskOrder(t.name, shards[t.name], seed, train, within, cache),
            pool=pools[t.name],
            fingerprint=fingerprint(shards[t.name]),
            substitutes=(
                first_good(shards[t.name], SUBSTITUTES) if config.skip_bad and train else []
            ),
        )
        for t in tasks
    ]
    return plans, rates
