"""Stream progress: what has been consumed, derived from the schedule, and its JSON state.

The primary fact is `consumed`, the number of examples this rank's training loop received in
the current generation (all ranks consume in lock step, so it also names the global position).
From it and the deterministic schedule follow, without reading data: the per-task counts, and
for every task the position k of its next record (its offset at the generation's start plus its
count in the generation), hence each task's (epoch, shard, offset).

Resume (`load_state_dict`):
- the same settings: exactly where the state was taken;
- another world size, batch size or worker count with the same global batch
  (batch_size x world_size): the same generation continues, so the same global sequence of
  examples follows, dealt to the new ranks (elastic resume, exact);
- another global batch: a new generation starts at the next global position, every task at its
  next record (no epoch restart); from there the schedule is that of the new global batch;
- another seed, mixture, rates, schedule, min_per_batch, split, shuffle setting or shard data:
  refused unless `reshard=True`, which starts a new generation with every task at its next
  epoch boundary.
`last_resume` says in one line what changed. A generation starts at 0 and grows by one at each
resume that starts a new schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from generalist.errors import ConfigError
from generalist.mixing.schedule import Schedule

if TYPE_CHECKING:
    from generalist.mixing.plan import StreamConfig

STATE_FORMAT = 2
# Settings that decide the global sequence: a change needs reshard=True.
CHECKED = (
    "seed",
    "split",
    "mixture",
    "rates",
    "min_per_batch",
    "shards",
    "shuffle_within_shard",
    "schedule",
)
# Settings that only decide how the global sequence is dealt: resumed exactly (elastic).
GEOMETRY = ("world_size", "batch_size", "num_workers")
JsonDict = dict[str, object]
PositionFn = Callable[[str, int], dict[str, int]]  # (task, k) -> where its record k lies


class StreamProgress:
    """Consumption bookkeeping for one stream (kept in the main process)."""

    def __init__(
        self,
        tasks: list[str],
        make_schedule: Callable[[int], Schedule],
        config: StreamConfig,
    ) -> None:
        self.tasks, self.make_schedule = tasks, make_schedule
        self.batch, self.world_size = config.rank_batch, config.world_size
        self.last_resume: str | None = None
        self.offsets = dict.fromkeys(tasks, 0)  # record position of each task at the start
        self.base_counts = dict.fromkeys(tasks, 0)  # examples seen in earlier generations
        self.base_rank_counts: dict[str, dict[str, int]] = {}
        self.base_position = 0  # global examples before this generation
        self._start(generation=0)

    def _start(self, generation: int) -> None:
        self.generation = generation
        self.schedule = self.make_schedule(generation)
        self.consumed = 0  # rank-local examples received by the loop (this generation)
        self._counted = 0  # how far the rank counts have been tallied
        self._rank_counts = [[0] * len(self.tasks) for _ in range(self.world_size)]

    def catch_up(self) -> None:
        """Tally the schedule's labels up to `consumed` for every rank."""
        batch = self.batch
        while self._counted < self.consumed:
            g, b0 = divmod(self._counted, batch)
            b1 = min(batch, b0 + self.consumed - self._counted)
            labels = self.schedule.batch(g)
            for rank in range(self.world_size):
                counts = self._rank_counts[rank]
                for label in labels[rank * batch + b0 : rank * batch + b1]:
                    counts[label] += 1
            self._counted += b1 - b0

    def generation_counts(self) -> list[int]:
        """Per-task examples consumed by all ranks in this generation."""
        g, b = divmod(self.consumed, self.batch)
        counts = self.schedule.counts_before(g)
        if b:
            labels = self.schedule.batch(g)
            for rank in range(self.world_size):
                for label in labels[rank * self.batch : rank * self.batch + b]:
                    counts[label] += 1
        return counts

    def next_records(self) -> dict[str, int]:
        """Per task: the position k of the next record it reads."""
        counts = self.generation_counts()
        return {t: self.offsets[t] + n for t, n in zip(self.tasks, counts)}

    def position(self) -> int:
        """Global examples consumed over all generations."""
        return self.base_position + self.consumed * self.world_size

    def counts(self, scope: str, rank: int) -> dict[str, int]:
        """Per-task examples consumed, by every rank ("global") or by `rank` ("rank")."""
        if scope == "global":
            counts = self.generation_counts()
            return {t: self.base_counts[t] + n for t, n in zip(self.tasks, counts)}
        if scope != "rank":
            raise ConfigError(f"counts scope is 'global' or 'rank', not {scope!r}")
        self.catch_up()
        base = self.base_rank_counts.get(str(rank), {})
        return {t: base.get(t, 0) + n for t, n in zip(self.tasks, self._rank_counts[rank])}

    def state_dict(self, identity: Mapping[str, object], where: PositionFn) -> JsonDict:
        """The state (identical on every rank); `identity`: the CHECKED and GEOMETRY values."""
        batch_index = self.consumed // self.batch
        following = self.next_records()
        return {
            "format": STATE_FORMAT,
            "config": {key: identity[key] for key in CHECKED + GEOMETRY},
            "generation": self.generation,
            "consumed": self.consumed,
            "position": self.position(),
            "mixer": {
                "generation": self.generation,
                "batch": batch_index,
                "window": batch_index // self.schedule.window_batches,
                "in_batch": self.consumed % self.batch,
            },
            "offsets": dict(self.offsets),
            "base": {"position": self.base_position, "counts": dict(self.base_counts)},
            "readers": {t: where(t, k) for t, k in following.items()},
            "counts": self.counts("global", 0),
            "rank_counts": {str(r): self.counts("rank", r) for r in range(self.world_size)},
        }

    def load_state_dict(
        self,
        state: Mapping[str, object],
        identity: Mapping[str, object],
        reshard: bool,
        totals: Mapping[str, int],
    ) -> None:
        """Continue from `state` (see the module docstring); `totals`: records per task."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise ConfigError(f"not a stream state of format {STATE_FORMAT}; was it saved by it?")
        saved: Mapping = state["config"]  # type: ignore[assignment]
        differ = [k for k in CHECKED if saved.get(k) != identity[k]]
        if differ and not reshard:
            what = "; ".join(f"{k}: saved {saved.get(k)!r}, now {identity[k]!r}" for k in differ)
            raise ConfigError(
                f"stream state does not match this run ({what}). Resume with the saved values, "
                f"or load_state_dict(state, reshard=True) to restart every task at its next "
                f"epoch boundary with the new settings"
            )
        moved = [k for k in GEOMETRY if saved.get(k) != identity[k]]
        old_batch = int(saved["batch_size"] or 1)  # type: ignore[call-overload]
        old_global = old_batch * int(saved["world_size"])  # type: ignore[call-overload]
        consumed = int(state["consumed"])  # type: ignore[call-overload]
        if moved and consumed % old_batch:
            raise ConfigError(
                f"stream state stands inside a batch ({consumed} examples of batches of "
                f"{old_batch}); a resume with other {', '.join(moved)} needs a whole batch"
            )
        readers: Mapping = state["readers"]  # type: ignore[assignment]
        counts: Mapping = state["counts"]  # type: ignore[assignment]
        rank_counts: Mapping = state["rank_counts"]  # type: ignore[assignment]
        generation = int(state["generation"])  # type: ignore[call-overload]
        same_world = "world_size" not in moved
        self.base_rank_counts = {}
        if not differ and old_global == self.batch * self.world_size:
            # same global sequence: the same generation, dealt to this run's ranks
            base: Mapping = state["base"]  # type: ignore[assignment]
            self._start(generation)
            self.offsets = {t: int(n) for t, n in state["offsets"].items()}  # type: ignore[union-attr]
            self.base_counts = {t: int(n) for t, n in base["counts"].items()}
            self.base_position = int(base["position"])
            self.consumed = consumed // old_batch * self.batch + consumed % old_batch
            if not self.consumed % self.batch:  # i.i.d.: no walk from the start
                gen = [int(counts[t]) - self.base_counts.get(t, 0) for t in self.tasks]
                self.schedule.seed_counts(self.consumed // self.batch, gen)
            self._counted = self.consumed  # rank counts: the saved ones are their base
            if same_world:  # on other ranks they start over
                self.base_rank_counts = {
                    r: {t: int(c.get(t, 0)) for t in self.tasks} for r, c in rank_counts.items()
                }
            self.last_resume = _line(moved, saved, identity, "the same global sequence")
            return
        position = int(state["position"])  # type: ignore[call-overload]
        self._start(generation + 1)
        self.base_position = position
        self.base_counts = {t: int(counts.get(t, 0)) for t in self.tasks}
        if same_world:
            self.base_rank_counts = {
                r: {t: int(c.get(t, 0)) for t in self.tasks} for r, c in rank_counts.items()
            }
        if differ:  # reshard: each task from its next epoch boundary
            self.offsets = {
                t: int(readers[t]["epochs_begun"]) * totals[t] if t in readers else 0
                for t in self.tasks
            }
            self.last_resume = _line(differ + moved, saved, identity, "each task's next epoch")
        else:  # another global batch: every task from its next record
            self.offsets = {t: int(readers[t]["next"]) if t in readers else 0 for t in self.tasks}
            self.last_resume = _line(moved, saved, identity, "the next global position")


def _line(changed: list[str], saved: Mapping, now: Mapping, then: str) -> str | None:
    """One line naming what changed and what continues; None when nothing changed."""
    if not changed:
        return None
    what = ", ".join(f"{k} {saved.get(k)!r} -> {now[k]!r}" for k in changed)
    return f"stream resumed with {what}: continues with {then}"
