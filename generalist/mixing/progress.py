"""Stream progress: what has been consumed, derived from the schedule, and its JSON state.

The primary fact is `consumed`, the number of examples this rank's training loop received in
the current generation (all ranks consume in lock step). From it and the deterministic schedule
follow, without reading data: how many records of each task every (rank, worker slot) reader
consumed, hence each reader's (epoch, shard, offset), the mixer's window, and the counts.
A generation starts at 0 and grows by one at each `reshard` resume.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from generalist.errors import ConfigError
from generalist.mixing.schedule import AnySchedule

STATE_FORMAT = 1
# Config values a plain resume must share with the run that saved the state.
CHECKED = (
    "seed",
    "world_size",
    "num_workers",
    "batch_size",
    "split",
    "mixture",
    "rates",
    "min_per_batch",
    "shards",
    "shuffle_within_shard",
    "schedule",
)
# What a state saved before a key existed meant by it (states from 0.2 drew windows i.i.d.).
LEGACY = {"schedule": "iid"}
PositionsFn = Callable[[int, str, int], dict[str, int]]


class StreamProgress:
    """Consumption bookkeeping for one stream (kept in the main process)."""

    def __init__(
        self,
        tasks: list[str],
        make_schedule: Callable[[int], AnySchedule],
        batch: int,
        world_size: int,
        slots_per_rank: int,
    ) -> None:
        self.tasks, self.make_schedule = tasks, make_schedule
        self.batch, self.world_size, self.slots_per_rank = batch, world_size, slots_per_rank
        self._start(generation=0)
        self.epoch_base: dict[str, int] = {}
        self.base_counts: dict[str, int] = {}
        self.base_rank_counts: dict[str, dict[str, int]] = {}

    def _start(self, generation: int) -> None:
        self.generation = generation
        self.schedule = self.make_schedule(generation)
        self.consumed = 0  # rank-local examples received by the loop (this generation)
        self._counted = 0  # how far `_slot_counts` has been tallied
        slots = self.world_size * self.slots_per_rank
        self._slot_counts = [[0] * len(self.tasks) for _ in range(slots)]

    def catch_up(self) -> None:
        """Tally the schedule's labels up to `consumed` for every rank's slots."""
        batch, slots = self.batch, self.slots_per_rank
        while self._counted < self.consumed:
            g, b0 = divmod(self._counted, batch)
            b1 = min(batch, b0 + self.consumed - self._counted)
            labels = self.schedule.batch(g)
            for rank in range(self.world_size):
                counts = self._slot_counts[rank * slots + g % slots]
                for label in labels[rank * batch + b0 : rank * batch + b1]:
                    counts[label] += 1
            self._counted += b1 - b0

    def slot_count(self, slot: int, task: str) -> int:
        """Records of `task` consumed by global reader slot `slot` (rank * workers + worker)."""
        self.catch_up()
        return self._slot_counts[slot][self.tasks.index(task)]

    def counts(self, scope: str, rank: int) -> dict[str, int]:
        """Per-task examples consumed, by every rank ("global") or by `rank` ("rank")."""
        if scope not in ("global", "rank"):
            raise ConfigError(f"counts scope is 'global' or 'rank', not {scope!r}")
        self.catch_up()
        slots = range(self.world_size * self.slots_per_rank)
        if scope == "rank":
            slots = range(rank * self.slots_per_rank, (rank + 1) * self.slots_per_rank)
        base = self.base_counts if scope == "global" else self.base_rank_counts.get(str(rank), {})
        return {
            task: base.get(task, 0) + sum(self._slot_counts[s][i] for s in slots)
            for i, task in enumerate(self.tasks)
        }

    def state_dict(self, config: Mapping[str, Any], positions: PositionsFn) -> dict[str, Any]:
        self.catch_up()
        batch_index = self.consumed // self.batch
        slots = range(self.world_size * self.slots_per_rank)
        return {
            "format": STATE_FORMAT,
            "config": {key: config[key] for key in CHECKED},
            "generation": self.generation,
            "consumed": self.consumed,
            "mixer": {
                "generation": self.generation,
                "batch": batch_index,
                "window": batch_index // self.schedule.window_batches,
                "in_batch": self.consumed % self.batch,
            },
            "epoch_base": dict(self.epoch_base),
            "readers": [
                {t: positions(s, t, self._slot_counts[s][i]) for i, t in enumerate(self.tasks)}
                for s in slots
            ],
            "counts": self.counts("global", 0),
            "rank_counts": {str(r): self.counts("rank", r) for r in range(self.world_size)},
        }

    def load_state_dict(
        self,
        state: Mapping[str, Any],
        config: Mapping[str, Any],
        reshard: bool,
        positions: PositionsFn,
    ) -> None:
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise ConfigError(f"not a stream state of format {STATE_FORMAT}; was it saved by it?")
        saved = {**LEGACY, **state["config"]}
        differ = [k for k in CHECKED if saved.get(k) != config[k]]
        if not differ and not reshard:
            self._start(int(state["generation"]))
            self.epoch_base = dict(state["epoch_base"])
            for slot, readers in enumerate(state["readers"]):
                for i, task in enumerate(self.tasks):
                    self._slot_counts[slot][i] = int(readers[task]["consumed"])
            self.consumed = self._counted = int(state["consumed"])
            # the saved counts are totals; what earlier generations contributed is the base
            self.base_counts, self.base_rank_counts = {}, {}
            current = self.counts("global", 0)
            self.base_counts = {t: int(state["counts"][t]) - current[t] for t in self.tasks}
            self.base_rank_counts = {
                r: {t: int(c[t]) - n for t, n in self.counts("rank", int(r)).items()}
                for r, c in state["rank_counts"].items()
            }
            return
        if differ and not reshard:
            what = "; ".join(f"{k}: saved {saved.get(k)!r}, now {config[k]!r}" for k in differ)
            raise ConfigError(
                f"stream state does not match this run ({what}). Resume with the saved values, "
                f"or load_state_dict(state, reshard=True) to restart every task at its next "
                f"epoch boundary with the new settings"
            )
        self._reshard(state)

    def _reshard(self, state: Mapping[str, Any]) -> None:
        """Every task restarts at the epoch after the furthest any old reader reached."""
        furthest: dict[str, int] = {}
        for readers in state["readers"]:
            for task, pos in readers.items():
                furthest[task] = max(furthest.get(task, 0), int(pos["epoch"]) + 1)
        self._start(int(state["generation"]) + 1)
        self.epoch_base = {t: furthest.get(t, 0) for t in self.tasks}
        self.base_counts = {t: int(state["counts"].get(t, 0)) for t in self.tasks}
        self.base_rank_counts = {
            r: {t: int(c.get(t, 0)) for t in self.tasks} for r, c in state["rank_counts"].items()
        }
