"""Fair placement at cluster scale, simulated in one process (schedules are functions of rank).

Bound stated (generalist/mixing/schedule.py, docs/mixer.md): given global batch g's task counts
c_g,i, a rank's share of it is a uniform random b-subset (b of B = b x world), so the rank's
count of task i is hypergeometric with mean b c_g,i / B and variance
b (c_g,i / B)(1 - c_g,i / B)(B - b) / (B - 1), independently per batch. Over a run every rank's
and every reader's (rank x worker's) count of every task lies within 6 standard deviations of
the summed mean, plus one example. Before fair placement the stratified schedule broke this by
far (a task tied to the last positions of each window, hence to the last rank).
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter

import pytest
from generalist.mixtures.multimedbench import MULTIMEDBENCH_RATES

from generalist.mixing.schedule import make_schedule

WORLDS = (1, 2, 3, 8, 32, 256)
WORKERS = (0, 1, 2, 4)
MINIMUMS = (0, 1, 2)


def random_rates(rng: random.Random) -> dict[str, float]:
    """2-12 tasks with random rates, always 0.15 next to 59.90 (Med-PaLM M's extremes)."""
    rates = {"vqa_rad": 0.15, "mimic_cxr_report": 59.90}
    for i in range(rng.randint(0, 10)):
        rates[f"t{i}"] = round(rng.choice([0.1, 1.0, 10.0]) * rng.random() + 0.05, 2)
    return rates


def check_placement(kind: str, rates: dict, world: int, batch: int, workers: int, m: int):
    tasks = list(rates)
    size = world * batch
    schedule = make_schedule(
        kind, tasks, rates, seed=world + batch, global_batch=size, min_per_batch=m
    )
    batches = max(40, 6000 // size)
    readers = max(1, workers)
    got = {"rank": Counter(), "reader": Counter()}
    mean = {"rank": Counter(), "reader": Counter()}
    var = {"rank": Counter(), "reader": Counter()}
    seen_k: dict[int, list[int]] = {i: [] for i in range(len(tasks))}
    last_k: dict[tuple[int, int, int], int] = {}
    total = Counter()
    for g in range(batches):
        labels, ks = schedule.batch(g), schedule.occurrences(g)
        counts = Counter(labels)
        total.update(counts)
        for rank in range(world):
            share = labels[rank * batch : (rank + 1) * batch]
            reader = (rank, g % readers)
            for i, c in counts.items():
                p = c / size
                v = batch * p * (1 - p) * (size - batch) / (size - 1) if size > 1 else 0.0
                for scope, key in (("rank", (rank, i)), ("reader", (*reader, i))):
                    mean[scope][key] += batch * p
                    var[scope][key] += v
            for j, label in enumerate(share):
                got["rank"][(rank, label)] += 1
                got["reader"][(*reader, label)] += 1
                k = ks[rank * batch + j]
                seen_k[label].append(k)
                # a reader's records of a task come in increasing order: it reads forwards
                assert k > last_k.get((*reader, label), -1)
                last_k[(*reader, label)] = k
        if kind == "stratified":  # exact at every global batch end
            n = (g + 1) * size
            for i, t in enumerate(tasks):
                assert abs(total[i] - schedule.effective_rates[t] * n) < 1 + 1e-9, (g, t)
    if m:  # the minimum holds per window of global batches
        per = schedule.min_window_batches
        for w in range(batches // per):
            window = Counter(itertools.chain(*(schedule.batch(w * per + b) for b in range(per))))
            assert min(window.get(i, 0) for i in range(len(tasks))) >= m
    for scope in ("rank", "reader"):
        for key, expected in mean[scope].items():
            bound = 6 * math.sqrt(var[scope][key]) + 1
            assert abs(got[scope][key] - expected) <= bound, (scope, key, got[scope][key])
    for i, ks in seen_k.items():  # every position of the task's sequence read once, in turn
        assert sorted(ks) == list(range(total[i]))


@pytest.mark.parametrize("kind", ["stratified", "iid"])
@pytest.mark.parametrize("world", WORLDS)
def test_every_rank_and_reader_gets_every_task_at_its_rate(kind: str, world: int) -> None:
    rng = random.Random(world * 7 + len(kind))
    case = WORLDS.index(world)
    workers, m = WORKERS[case % 4], MINIMUMS[(case + (kind == "iid")) % 3]
    batch = rng.randint(1, 4)
    check_placement(kind, random_rates(rng), world, batch, workers, m)


@pytest.mark.parametrize("kind", ["stratified", "iid"])
def test_the_issue_table_multimedbench_8_ranks_is_balanced(kind: str) -> None:
    """multimedbench (min_per_batch 1), 8 ranks x 4, 500 global batches: every rank within the
    bound (the stratified schedule put 2,667 vs 112 mimic_cxr_classification on ranks 0 / 7)."""
    rates = dict(MULTIMEDBENCH_RATES)
    check_placement(kind, rates, 8, 4, 2, 1)


def test_jumping_to_a_batch_equals_walking_to_it() -> None:
    """A resume computes batch g alone: labels and occurrences equal the walked ones (i.i.d.:
    from the counts a state carries, or by a walk when there are none)."""
    rng = random.Random(5)
    for kind, m in itertools.product(("stratified", "iid"), (0, 2)):
        rates = random_rates(rng)
        walked = make_schedule(kind, list(rates), rates, 3, 24, m)
        for g in range(300):
            walked.batch(g)
        for g in rng.sample(range(300), 5):
            before = make_schedule(kind, list(rates), rates, 3, 24, m)
            assert before.counts_before(g) == walked.counts_before(g)
            seeded = make_schedule(kind, list(rates), rates, 3, 24, m)
            seeded.seed_counts(g, walked.counts_before(g))
            assert seeded.occurrences(g) == walked.occurrences(g)
            assert seeded.batch(g) == walked.batch(g)
