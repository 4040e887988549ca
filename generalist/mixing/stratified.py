"""The stratified schedule: every prefix of the global sequence holds every task's count strictly
within one example of rate x position.

Guarantee (exact arithmetic on the rates as fractions): for every position n >= 0 and task i,
|count_i(n) - rate_i x n| < 1, where rate_i are the mixture's normalised rates, or with
`min_per_batch` > 0 the effective rates of `quota.effective_rates` (tasks too rare for the
minimum get exactly min_per_batch per minimum window; `effective_rates` says what they are). It
follows that every run of the minimum's window (ceil(m x tasks / global batch) global batches,
aligned) holds at least m examples of every task.

Construction (generalist.mixing.quota has the proofs in brief): positions are cut into windows
of whole global batches, long enough that every task's target reaches a new integer inside each.
The counts at each window end are a quota state chosen by `boundary_counts` from (seed, position)
alone; inside a window, the examples each task still owes are placed earliest deadline first,
ties broken by a seeded draw, so each window's order depends on the seed. A window is computed
from its index alone (O(window x log tasks)), so any rank or worker, and a resume, jumps straight
to it, as with the i.i.d. schedule.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Mapping, Sequence
from fractions import Fraction

from generalist.errors import GeneralistError
from generalist.mixing.quota import boundary_counts, effective_rates, exact_rates
from generalist.seeds import stable_seed

MIN_WINDOW = 1024  # positions: a window costs O(window), so a resume computes ~1 ms of it


class StratifiedSchedule:
    """The global task sequence with every prefix within one example of its target counts."""

    kind = "stratified"

    def __init__(
        self,
        tasks: Sequence[str],
        rates: Mapping[str, float],
        seed: int,
        global_batch: int,
        min_window_batches: int,
        min_per_batch: int,
        generation: int = 0,
    ) -> None:
        self.tasks = list(tasks)
        self.seed, self.generation = seed, generation
        self.global_batch = global_batch
        self.min_per_batch = min_per_batch
        min_window = min_window_batches * global_batch
        given = [Fraction(rates[t]) for t in self.tasks]
        self.exact = exact_rates(effective_rates(given, min_window, min_per_batch))
        total = self.exact.total
        self.effective_rates = {t: a / total for t, a in zip(self.tasks, self.exact.weights)}
        # whole runs of the minimum's window, long enough for every task to pass an integer
        # (and for the per-window work, two boundaries, to be spread over many positions)
        runs = max(1, math.ceil(max(self.exact.longest_gap, MIN_WINDOW) / min_window))
        self.window_batches = min_window_batches * runs
        self.window_size = self.window_batches * global_batch
        self._cached: tuple[int, list[int]] = (-1, [])
        self._bounds: dict[int, list[int]] = {}

    def boundary(self, position: int) -> list[int]:
        """Counts per task over positions [0, position) at a window end (cached, two kept)."""
        if position not in self._bounds:
            if len(self._bounds) >= 2:
                self._bounds.pop(next(iter(self._bounds)))
            rng = random.Random(stable_seed(self.seed, "quota", self.generation, position))
            self._bounds[position] = boundary_counts(self.exact, position, rng)
        return self._bounds[position]

    def window(self, index: int) -> list[int]:
        """Labels of window `index` (the last one is cached: consecutive reads are cheap)."""
        if self._cached[0] != index:
            self._cached = (index, self._fill(index))
        return self._cached[1]

    def _fill(self, index: int) -> list[int]:
        start, end = index * self.window_size, (index + 1) * self.window_size
        before, after = self.boundary(start), self.boundary(end)
        weights, total = self.exact.weights, self.exact.total
        jobs = []  # (release, deadline, task): 1-based positions the j-th example may take
        for task, (a, low, high) in enumerate(zip(weights, before, after)):
            for j in range(low + 1, high + 1):
                release = max((j - 1) * total // a + 1, start + 1)
                jobs.append((release, min(-(-j * total // a), end), task))
        jobs.sort()
        rng = random.Random(stable_seed(self.seed, "mix", self.generation, index))
        ready: list[tuple[int, float, int]] = []
        labels, n = [], 0
        for position in range(start + 1, end + 1):
            while n < len(jobs) and jobs[n][0] <= position:
                heapq.heappush(ready, (jobs[n][1], rng.random(), jobs[n][2]))
                n += 1
            if not ready or ready[0][0] < position:  # excluded by construction (quota.py)
                raise GeneralistError(
                    f"stratified schedule: no task fits position {position}; please report "
                    f"the rates {self.effective_rates}"
                )
            labels.append(heapq.heappop(ready)[2])
        return labels

    def batch(self, index: int) -> list[int]:
        """Labels of global batch `index` (all ranks, in rank order)."""
        start = (index % self.window_batches) * self.global_batch
        return self.window(index // self.window_batches)[start : start + self.global_batch]
