"""The mixer's task schedule: which task fills each position of the global example sequence.

Positions are numbered globally: global batch g (g = 0, 1, ...) holds positions
[g x B, (g + 1) x B) with B = batch_size x world_size, and rank r takes [r x b, (r + 1) x b) of
it (b = batch_size). Everything here is a pure function of (seed, generation, rates, B,
min_per_batch) and the position: any rank or dataloader worker computes any window alone, a
resume jumps there, and the world size only enters through B. Why our own code: seqio,
webdataset and HF mixers keep one sequential RNG, neither shareable across ranks nor seekable;
no library schedules exact quotas.

Two schedules (`make_schedule(kind, ...)`, the mixture's `schedule` or build_stream's):

- "stratified" (the default): each global batch holds every task's count from exact quotas.
  Guarantee (exact arithmetic on the rates as fractions): at every global batch end n = g x B
  and for every task i, |count_i(n) - rate_i x n| < 1, where rate_i are the mixture's
  normalised rates, or with `min_per_batch` > 0 the effective rates of `quota.effective_rates`.
  Inside a global batch count_i(n) lies between its values at the two batch ends (the batch's
  positions are dealt in a seeded random order, below), so |count_i(n) - rate_i n| < 1 + rate_i
  x B + (examples of i in that batch) at worst. Every aligned run of the minimum's window
  (ceil(m x tasks / B) global batches) holds at least m examples of every task.
- "iid": each window's labels are drawn i.i.d. from the rates, as seqio/webdataset/HF mixers
  do; proportions are right on average (about 0.6 points off over 6,000 examples).

Fair placement (both schedules): after a global batch's labels are chosen, its B positions are
put in a random order drawn from (seed, generation, batch index) before they are dealt to
ranks. Rank r's share of batch g is then a uniform random b-subset of the batch, so every rank
and every dataloader worker receives every task at its rate (hypergeometric noise per batch,
never a fixed position for a task), while each global batch keeps its exact counts and minimum.

Construction of the stratified schedule (generalist.mixing.quota has the proofs in brief):
positions are cut into windows of whole global batches, long enough that every task's target
reaches a new integer inside each; the counts at each window end are a quota state chosen by
`boundary_counts` from (seed, position) alone; inside a window, the examples each task still
owes are placed earliest deadline first, ties broken by a seeded draw.

Per-batch minimum (`min_per_batch = m`, Med-PaLM M uses 1): the stratified schedule holds it
through effective rates; the i.i.d. one, after drawing a window, gives each task with fewer than
m labels positions of the task with the largest surplus until every task has m. When B is
smaller than m x tasks a window spans `ceil(m * tasks / B)` consecutive batches and the minimum
holds per window. `realized_rates()` of the stream reports what was actually seen.

Occurrences: the stream reads, for the k-th example of task i in the global sequence, record k
of that task's endless epoch order (generalist.mixing.shares). `occurrences(g)` gives k for
every position of global batch g: the counts before the batch's window (a quota state for the
stratified schedule, a running sum for the i.i.d. one) plus the count inside the window.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Mapping, Sequence
from fractions import Fraction

from generalist.catalog.mixture import SCHEDULES
from generalist.errors import ConfigError, GeneralistError
from generalist.mixing.quota import boundary_counts, effective_rates, exact_rates
from generalist.seeds import stable_seed

MIN_WINDOW = 1024  # stratified: positions per window at least (a resume computes ~1 ms of it)


def window_batches(min_per_batch: int, n_tasks: int, global_batch: int) -> int:
    """Global batches per mixing window: 1, or enough that m x tasks labels fit in one."""
    if global_batch < 1:
        raise ConfigError(f"global batch must be >= 1, got {global_batch}")
    return max(1, math.ceil(min_per_batch * n_tasks / global_batch))


def draw_window(
    n_tasks: int, weights: Sequence[float], size: int, min_per_task: int, rng: random.Random
) -> list[int]:
    """i.i.d. task indices for `size` positions, each task raised to `min_per_task`."""
    labels = rng.choices(range(n_tasks), weights=weights, k=size)
    if min_per_task <= 0:
        return labels
    counts = [0] * n_tasks
    for label in labels:
        counts[label] += 1
    for task in range(n_tasks):
        while counts[task] < min_per_task:
            donor = max(range(n_tasks), key=lambda t: counts[t] - min_per_task)
            if counts[donor] <= min_per_task:
                raise ConfigError(  # unreachable when size >= min_per_task * n_tasks
                    f"mixing window of {size} cannot hold {min_per_task} of each of {n_tasks} tasks"
                )
            spots = [i for i, label in enumerate(labels) if label == donor]
            labels[rng.choice(spots)] = task
            counts[donor] -= 1
            counts[task] += 1
    return labels


class _Window:
    """One window's dealt labels, each position's occurrence index inside the window, and the
    per-task counts before the window."""

    def __init__(self, labels: list[int], before: list[int]) -> None:
        self.labels, self.before = labels, before
        seen = [0] * len(before)
        self.within = []
        for label in labels:
            self.within.append(seen[label])
            seen[label] += 1
        self.after = [b + s for b, s in zip(before, seen)]


class Schedule:
    """The global task sequence of one generation: position -> task index, window by window."""

    def __init__(
        self,
        kind: str,
        tasks: Sequence[str],
        rates: Mapping[str, float],
        seed: int,
        global_batch: int,
        min_per_batch: int,
        generation: int = 0,
    ) -> None:
        if kind not in SCHEDULES:
            raise ConfigError(f"schedule must be one of {list(SCHEDULES)}, got {kind!r}")
        self.kind, self.tasks = kind, list(tasks)
        self.seed, self.generation = seed, generation
        self.global_batch, self.min_per_batch = global_batch, min_per_batch
        self.min_window_batches = window_batches(min_per_batch, len(self.tasks), global_batch)
        self.window_batches = self.min_window_batches
        self.weights = [rates[t] for t in self.tasks]
        self.effective_rates = dict(zip(self.tasks, self.weights))
        if kind == "stratified":
            min_window = self.min_window_batches * global_batch
            given = [Fraction(rates[t]) for t in self.tasks]
            self.exact = exact_rates(effective_rates(given, min_window, min_per_batch))
            total = self.exact.total
            self.effective_rates = {t: a / total for t, a in zip(self.tasks, self.exact.weights)}
            # whole runs of the minimum's window, long enough for every task to pass an integer
            # (and for the per-window work, two boundaries, to be spread over many positions)
            runs = max(1, math.ceil(max(self.exact.longest_gap, MIN_WINDOW) / min_window))
            self.window_batches = self.min_window_batches * runs
        self.window_size = self.window_batches * global_batch
        self._windows: dict[int, _Window] = {}  # the last two (a resume and its successor)
        self._bounds: dict[int, list[int]] = {}
        self._known: dict[int, list[int]] = {0: [0] * len(self.tasks)}  # iid: counts at window

    # -- labels ----------------------------------------------------------------------------
    def window(self, index: int) -> _Window:
        """Window `index`: dealt labels, occurrences (cached: consecutive reads are cheap)."""
        if index not in self._windows:
            labels = self._labels(index)
            before = self._before_window(index)
            self._deal(index, labels)
            if len(self._windows) >= 2:
                self._windows.pop(next(iter(self._windows)))
            self._windows[index] = window = _Window(labels, before)
            if self.kind == "iid":
                self._remember(index + 1, window.after)
        return self._windows[index]

    def _labels(self, index: int) -> list[int]:
        rng = random.Random(stable_seed(self.seed, "mix", self.generation, index))
        if self.kind == "iid":
            n = len(self.tasks)
            return draw_window(n, self.weights, self.window_size, self.min_per_batch, rng)
        return self._fill(index, rng)

    def _deal(self, index: int, labels: list[int]) -> None:
        """Fair placement: each global batch of the window in its own seeded random order."""
        size = self.global_batch
        for b in range(self.window_batches):
            g = index * self.window_batches + b
            part = labels[b * size : (b + 1) * size]
            random.Random(stable_seed(self.seed, "deal", self.generation, g)).shuffle(part)
            labels[b * size : (b + 1) * size] = part

    def batch(self, index: int) -> list[int]:
        """Labels of global batch `index` (all ranks, in rank order)."""
        start = (index % self.window_batches) * self.global_batch
        labels = self.window(index // self.window_batches).labels
        return labels[start : start + self.global_batch]

    def occurrences(self, index: int, lo: int = 0, hi: int | None = None) -> list[int]:
        """For positions lo..hi (default: all) of global batch `index`: how many examples of its
        task precede each in this generation's sequence (the k of "the k-th example of the
        task")."""
        start = (index % self.window_batches) * self.global_batch
        window = self.window(index // self.window_batches)
        first, last = start + lo, start + (self.global_batch if hi is None else hi)
        return [
            window.before[label] + window.within[p]
            for p, label in enumerate(window.labels[first:last], first)
        ]

    def counts_before(self, index: int) -> list[int]:
        """Per-task counts over the positions before global batch `index`."""
        start = (index % self.window_batches) * self.global_batch
        window = self.window(index // self.window_batches)
        counts = list(window.before)
        for label in window.labels[:start]:
            counts[label] += 1
        return counts

    def _before_window(self, index: int) -> list[int]:
        if self.kind == "stratified":
            return self.boundary(index * self.window_size)
        known = max(w for w in self._known if w <= index)
        counts = list(self._known[known])
        for w in range(known, index):  # i.i.d.: a running sum (resume seeds it: `seed_counts`)
            for label in self._labels(w):
                counts[label] += 1
        return counts

    def seed_counts(self, batch: int, counts: Sequence[int]) -> None:
        """i.i.d.: the per-task counts before global batch `batch` are known (a resumed state),
        so windows from there on need no walk from the start."""
        if self.kind == "iid" and batch % self.window_batches == 0:
            self._remember(batch // self.window_batches, list(counts))

    def _remember(self, window: int, counts: list[int]) -> None:
        self._known[window] = counts
        while len(self._known) > 4:  # window 0 and the latest few: memory stays flat
            self._known.pop(min(w for w in self._known if w > 0))

    # -- stratified --------------------------------------------------------------------------
    def boundary(self, position: int) -> list[int]:
        """Stratified: counts per task over positions [0, position) at a window end."""
        if position not in self._bounds:
            if len(self._bounds) >= 2:
                self._bounds.pop(next(iter(self._bounds)))
            rng = random.Random(stable_seed(self.seed, "quota", self.generation, position))
            self._bounds[position] = boundary_counts(self.exact, position, rng)
        return self._bounds[position]

    def _fill(self, index: int, rng: random.Random) -> list[int]:
        """Earliest deadline first between two quota states (ties: a seeded draw)."""
        start, end = index * self.window_size, (index + 1) * self.window_size
        before, after = self.boundary(start), self.boundary(end)
        weights, total = self.exact.weights, self.exact.total
        jobs = []  # (release, deadline, task): 1-based positions the j-th example may take
        for task, (a, low, high) in enumerate(zip(weights, before, after)):
            for j in range(low + 1, high + 1):
                release = max((j - 1) * total // a + 1, start + 1)
                jobs.append((release, min(-(-j * total // a), end), task))
        jobs.sort()
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


def make_schedule(
    kind: str,
    tasks: Sequence[str],
    rates: Mapping[str, float],
    seed: int,
    global_batch: int,
    min_per_batch: int,
    generation: int = 0,
) -> Schedule:
    """The `kind` schedule ("stratified" or "iid") of one stream generation."""
    return Schedule(kind, tasks, rates, seed, global_batch, min_per_batch, generation)
