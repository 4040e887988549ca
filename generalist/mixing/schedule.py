"""The mixer's task schedule: which task fills each position of the global example sequence.

Two schedules (`make_schedule(kind, ...)`, the mixture's `schedule` or build_stream's):
"stratified" (the default, generalist.mixing.stratified): every prefix of the sequence holds
every task's count within one example of rate x position; "iid" (below): each window is drawn
i.i.d. from the rates, so proportions are only right on average (about 0.6 points off over
6,000 examples), as in seqio/webdataset/HF mixers.

i.i.d.: positions are grouped in windows of `window_batches` global batches (global batch =
batch_size x world_size); the labels of window j come from `random.Random(stable_seed(seed, "mix",
generation, j))`. The mixer's random state is therefore a counter (the window index): any rank
or dataloader worker can compute any window without the others, and a resume jumps there in O(1)
without replaying earlier draws. Why our own code: seqio/webdataset/HF mixers keep one
sequential RNG, which is neither shareable across ranks nor seekable.

Per-batch minimum (`min_per_batch = m`, Med-PaLM M uses 1; both schedules honour it, the
stratified one through effective rates): in the i.i.d. schedule, after drawing a window by the
rates, each task with fewer than m labels takes positions from the task with the largest
surplus, until every task has m. When a global batch is smaller than m x (number of tasks),
the window spans `ceil(m * tasks / global_batch)` consecutive batches and the minimum holds per
window: each task appears at least m times in every such run of consecutive batches (round
robin across batches) instead of failing. Raising rare tasks to m per window raises their
realized rate to at least m / window size; `realized_rates()` reports what was actually seen.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

from generalist.catalog.mixture import SCHEDULES
from generalist.errors import ConfigError
from generalist.mixing.stratified import StratifiedSchedule
from generalist.seeds import stable_seed


def window_batches(min_per_batch: int, n_tasks: int, global_batch: int) -> int:
    """Global batches per mixing window: 1, or enough that m x tasks labels fit in one."""
    if global_batch < 1:
        raise ConfigError(f"global batch must be >= 1, got {global_batch}")
    return max(1, math.ceil(min_per_batch * n_tasks / global_batch))


def draw_window(
    tasks: Sequence[str],
    weights: Sequence[float],
    size: int,
    min_per_task: int,
    seed: int,
    generation: int,
    window: int,
) -> list[int]:
    """Task indices for the `size` positions of window `window` (see the module docstring)."""
    rng = random.Random(stable_seed(seed, "mix", generation, window))
    labels = rng.choices(range(len(tasks)), weights=weights, k=size)
    if min_per_task <= 0:
        return labels
    counts = [0] * len(tasks)
    for label in labels:
        counts[label] += 1
    for task in range(len(tasks)):
        while counts[task] < min_per_task:
            donor = max(range(len(tasks)), key=lambda t: counts[t] - min_per_task)
            if counts[donor] <= min_per_task:
                raise ConfigError(  # unreachable when size >= min_per_task * len(tasks)
                    f"mixing window of {size} cannot hold {min_per_task} of each of "
                    f"{len(tasks)} tasks"
                )
            spots = [i for i, label in enumerate(labels) if label == donor]
            labels[rng.choice(spots)] = task
            counts[donor] -= 1
            counts[task] += 1
    return labels


class Schedule:
    """The i.i.d. global task sequence: position -> task index, window by window (cached)."""

    kind = "iid"

    def __init__(
        self,
        tasks: Sequence[str],
        rates: Mapping[str, float],
        seed: int,
        global_batch: int,
        min_per_batch: int,
        generation: int = 0,
    ) -> None:
        self.tasks = list(tasks)
        self.weights = [rates[t] for t in self.tasks]
        self.seed, self.generation = seed, generation
        self.global_batch = global_batch
        self.min_per_batch = min_per_batch
        self.window_batches = window_batches(min_per_batch, len(self.tasks), global_batch)
        self.window_size = self.window_batches * global_batch
        self._cached: tuple[int, list[int]] = (-1, [])

    def window(self, index: int) -> list[int]:
        """Labels of window `index` (the last one is cached: consecutive reads are cheap)."""
        if self._cached[0] != index:
            labels = draw_window(
                self.tasks,
                self.weights,
                self.window_size,
                self.min_per_batch,
                self.seed,
                self.generation,
                index,
            )
            self._cached = (index, labels)
        return self._cached[1]

    def batch(self, index: int) -> list[int]:
        """Labels of global batch `index` (all ranks, in rank order)."""
        start = (index % self.window_batches) * self.global_batch
        return self.window(index // self.window_batches)[start : start + self.global_batch]


AnySchedule = Schedule | StratifiedSchedule


def make_schedule(
    kind: str,
    tasks: Sequence[str],
    rates: Mapping[str, float],
    seed: int,
    global_batch: int,
    min_per_batch: int,
    generation: int = 0,
) -> AnySchedule:
    """The `kind` schedule ("stratified" or "iid") of one stream generation."""
    if kind == "iid":
        return Schedule(tasks, rates, seed, global_batch, min_per_batch, generation)
    if kind != "stratified":
        raise ConfigError(f"schedule must be one of {list(SCHEDULES)}, got {kind!r}")
    batches = window_batches(min_per_batch, len(tasks), global_batch)
    return StratifiedSchedule(tasks, rates, seed, global_batch, batches, min_per_batch, generation)
