"""Exact quotas for the stratified schedule: rates as exact integers, the per-batch minimum folded
into effective rates, and how many examples of each task precede a window boundary.

Notation: rate_i = a_i / A exactly (integers); after t positions task i has a count c_i(t).
A *quota state* at t has c_i in {floor(rate_i t), ceil(rate_i t)} and sum c_i = t, so every
count is strictly within one example of rate_i x t. Unit "jobs": the j-th example of task i may
sit at position T (1-based) only if the counts stay quota states, i.e. T lies in
[floor((j-1) / rate_i) + 1, ceil(j / rate_i)] (its release and deadline).

`boundary_counts(rates, t)` picks a quota state at t meeting two families of conditions:
look-ahead (for every d >= 1, at most R(t + d) of the tasks given their extra example by t reach
their next integer only after t + d, where R(s) = s - sum floor(rate s)) and look-back (the
same in reverse time). Both are bounds on nested sets of tasks, so one small max-flow finds such
a state; one always exists (a valid infinite sequence exists for any rates, Tijdeman 1980, and
its state at t meets both). Between two such states t0 < t1 where every task passes an integer
(so no count would have to fall), Hall's condition holds for every interval of positions: inside
the window because the rates sum to 1, at t0 by look-ahead, at t1 by look-back. So
earliest-deadline-first fills the window with a quota state at every position
(generalist.mixing.stratified). Why our own code: no library schedules this.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from generalist.errors import GeneralistError


@dataclass(frozen=True)
class ExactRates:
    """rate_i = weights[i] / total, exactly."""

    weights: tuple[int, ...]
    total: int

    @property
    def longest_gap(self) -> int:
        """ceil(1 / smallest rate): positions within which every task reaches a new integer."""
        return -(-self.total // min(self.weights))


def exact_rates(rates: Sequence[Fraction]) -> ExactRates:
    """Integers a_i and A with a_i / A equal to `rates` normalised to sum 1 (all must be > 0)."""
    total = sum(rates, Fraction(0))
    normal = [r / total for r in rates]
    common = math.lcm(*(r.denominator for r in normal))
    return ExactRates(tuple(int(r * common) for r in normal), common)


def effective_rates(rates: Sequence[Fraction], window: int, minimum: int) -> list[Fraction]:
    """Rates that give every task at least `minimum` examples in each run of `window` positions.

    A task whose share of a window would be under minimum + 1 gets exactly `minimum` per window
    (rate minimum / window: the quota states then hold it to exactly that at each window end);
    the others share the rest in their given proportions, each keeping at least minimum + 1
    per window, which quota states turn into at least `minimum` in every window. When no task
    is left free, the window's positions are handed out as fixed integer quotas.
    """
    k = len(rates)
    if minimum <= 0 or k == 1:
        return list(rates)
    fixed: dict[int, int] = {}
    while len(fixed) < k:
        free = [i for i in range(k) if i not in fixed]
        room = window - sum(fixed.values())
        mass = sum((rates[i] for i in free), Fraction(0))
        share = {i: rates[i] / mass * room for i in free}
        low = [i for i in free if share[i] < minimum + 1]
        if not low:
            return [
                Fraction(fixed[i], window) if i in fixed else share[i] / window for i in range(k)
            ]
        fixed.update((i, minimum) for i in low)
    total = sum(rates, Fraction(0))
    # all fixed: the extra positions (fewer than k) go to the largest remainders of the rates
    extra = window - minimum * k
    order = sorted(range(k), key=lambda i: (-(rates[i] / total * window) % 1, i))
    quotas = [minimum + (1 if i in order[:extra] else 0) for i in range(k)]
    return [Fraction(q, window) for q in quotas]


class _Flow:
    """Unit-augmenting max-flow (Edmonds-Karp) on a graph of a few dozen nodes."""

    def __init__(self, nodes: int) -> None:
        self.edges: list[list[list[int]]] = [[] for _ in range(nodes)]

    def add(self, head: int, tail: int, capacity: int) -> tuple[int, int]:
        self.edges[head].append([tail, capacity, len(self.edges[tail])])
        self.edges[tail].append([head, 0, len(self.edges[head]) - 1])
        return head, len(self.edges[head]) - 1

    def run(self, source: int, sink: int) -> int:
        flow = 0
        while True:
            back: list[tuple[int, int] | None] = [None] * len(self.edges)
            back[source] = (source, -1)
            queue = deque([source])
            while queue and back[sink] is None:
                node = queue.popleft()
                for n, (tail, capacity, _) in enumerate(self.edges[node]):
                    if capacity > 0 and back[tail] is None:
                        back[tail] = (node, n)
                        queue.append(tail)
            if back[sink] is None:
                return flow
            node = sink
            while node != source:
                head, n = back[node]  # type: ignore[misc]
                edge = self.edges[head][n]
                edge[1] -= 1
                self.edges[node][edge[2]][1] += 1
                node = head
            flow += 1


def _levels(depths: dict[int, int], bound: list[int]) -> tuple[list[int], list[int | None]]:
    """Distinct depths >= 1 (ascending) and, per depth, the least bound[d] over the d it owns.

    A depth level mu_j owns d in (mu_{j-1}, mu_j]: for those d the set {i: depth_i >= d} is
    {i: depth_i >= mu_j}. bound[d - 1] holds the constraint for d (only d within it count).
    """
    levels = sorted({d for d in depths.values() if d >= 1})
    values, low = [], 1
    for level in levels:
        span = bound[low - 1 : min(level, len(bound))]
        values.append(min(span) if span else None)
        low = level + 1
    return levels, values


def _ahead(rates: ExactRates, t: int, steps: int) -> list[int]:
    """R(t + d) for d = 1..steps, from the steps at which each task passes its next integers
    (R(t + d) = R(t) + d - integers passed by then): O(steps + tasks), not O(steps x tasks)."""
    a, total = rates.weights, rates.total
    passed = [0] * (steps + 1)
    for ai in a:
        gap = total - (ai * t) % total  # (floor(rate t) + 1) x A - a t: to the next integer
        while (d := -(-gap // ai)) <= steps:
            passed[d] += 1
            gap += total
    spare, count = [], t - sum((ai * t) // total for ai in a)
    for d in range(1, steps + 1):
        count += 1 - passed[d]
        spare.append(count)
    return spare


def _behind(rates: ExactRates, t: int, steps: int) -> list[int]:
    """For s = t - d, d = 1..steps (s >= 0): the tasks with rate x s not an integer, minus R(s).
    R(t - d) = R(t) - d + integers left behind by then."""
    a, total = rates.weights, rates.total
    left, exact = [0] * (steps + 1), [0] * (steps + 1)
    for ai in a:
        above = (ai * t) % total  # a t - (K - j) A for j = 0, 1, ...: K = floor(rate t)
        while True:
            d, rest = divmod(above, ai)
            if rest == 0 and 1 <= d <= steps:
                exact[d] += 1  # rate x (t - d) is the integer K - j
            if d + 1 > steps:
                break
            left[d + 1] += 1  # from t - d - 1 on, floor(rate s) is below K - j
            above += total
    slack, count = [], t - sum((ai * t) // total for ai in a)
    for d in range(1, steps + 1):
        count += left[d] - 1
        slack.append(len(a) - exact[d] - count)
    return slack


def boundary_counts(rates: ExactRates, t: int, rng: random.Random | None = None) -> list[int]:
    """A quota state at position t that can be continued forwards and reached from behind.

    `rng` orders the candidates (a seeded choice among the valid states); None: largest
    remainder first.
    """
    a, total = rates.weights, rates.total
    floors = [(ai * t) // total for ai in a]
    rem = [(ai * t) % total for ai in a]  # frac(rate_i t) x A
    extra = t - sum(floors)  # R(t): how many tasks are one above their floor
    if extra == 0:
        return floors
    eligible = [i for i, r in enumerate(rem) if r > 0]
    # ahead[i]: the largest d >= 1 for which task i has not reached its next integer by t + d
    # (ceil(p_i) - 1, p_i = (1 - frac) / rate); behind[i]: same backwards (ceil(q_i) - 1).
    ahead = {i: -(-(total - rem[i]) // a[i]) - 1 for i in eligible}
    behind = {i: -(-rem[i] // a[i]) - 1 for i in eligible} if t > 0 else {}
    span_f = max(ahead.values(), default=0)
    span_b = min(max(behind.values(), default=0), t)
    # look-ahead: at most R(t + d) of the extra examples on tasks with ahead >= d
    f_levels, caps = _levels(ahead, _ahead(rates, t, span_f))
    # look-back: at most (fractional(s) - R(s)) tasks without an extra have behind >= d
    b_levels, slacks = _levels(behind, _behind(rates, t, span_b))
    needs = [
        max(0, sum(1 for i in eligible if behind.get(i, 0) >= level) - s) if s is not None else 0
        for level, s in zip(b_levels, slacks)
    ]
    m, n = len(b_levels), len(f_levels)
    source, sink = 0, 1
    flow = _Flow(4 + m + n)
    # y-chain: source -> Y_m -> ... -> Y_0; the arc Y_j -> Y_j-1 carries R minus the extra
    # examples given to tasks of look-back depth >= j, so its capacity R - need_j is the need.
    flow.add(source, 2 + m, extra)
    for j in range(m, 0, -1):
        if needs[j - 1] > extra:
            raise GeneralistError(f"stratified schedule: no quota state at position {t}")
        flow.add(2 + j, 2 + j - 1, extra - needs[j - 1])
    # x-chain: X_n -> ... -> X_0 -> sink; the arc X_j -> X_j-1 carries the extra examples of
    # tasks with look-ahead depth >= j: at most cap_j.
    for j in range(n, 0, -1):
        flow.add(3 + m + j, 3 + m + j - 1, extra if caps[j - 1] is None else caps[j - 1])
    flow.add(3 + m, sink, extra)
    order = sorted(eligible, key=lambda i: (-rem[i], i))
    if rng is not None:
        rng.shuffle(order)
    arcs = {}
    for i in order:
        y = sum(1 for level in b_levels if level <= behind.get(i, 0))
        x = sum(1 for level in f_levels if level <= ahead[i])
        arcs[i] = flow.add(2 + y, 3 + m + x, 1)
    if flow.run(source, sink) != extra:
        raise GeneralistError(f"stratified schedule: no quota state at position {t}")
    counts = list(floors)
    for i, (head, n_arc) in arcs.items():
        if flow.edges[head][n_arc][1] == 0:
            counts[i] += 1
    return counts
