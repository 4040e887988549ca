"""Rates (given and examples-proportional) and the mixer schedule: proportions and minimums."""

from __future__ import annotations

import math
from collections import Counter

import pytest
from generalist.mixtures.multimedbench import MULTIMEDBENCH_RATES

from generalist.catalog.mixture import (
    MIXTURES,
    Mixture,
    examples_proportional,
    examples_proportional_mixture,
    mixture_from_rates,
)
from generalist.errors import ConfigError, GeneralistError
from generalist.mixing.schedule import Schedule, make_schedule, window_batches


def bound(p: float, n: int) -> float:
    """The stated bound: 5 binomial standard errors plus one example."""
    return 5 * math.sqrt(p * (1 - p) / n) + 1 / n


def realized(schedule: Schedule, batches: int) -> dict[str, float]:
    counts = Counter(label for g in range(batches) for label in schedule.batch(g))
    total = sum(counts.values())
    return {t: counts[i] / total for i, t in enumerate(schedule.tasks)}


def test_examples_proportional_with_cap_and_temperature() -> None:
    counts = {"a": 100, "b": 1000, "c": 10_000}
    assert examples_proportional(counts) == pytest.approx(
        {"a": 100 / 11_100, "b": 1000 / 11_100, "c": 10_000 / 11_100}
    )
    # cap 1000: c counts as 1000 -> a 100/2100, b and c 1000/2100 each
    assert examples_proportional(counts, cap=1000) == pytest.approx(
        {"a": 100 / 2100, "b": 1000 / 2100, "c": 1000 / 2100}
    )
    # temperature 2: square roots 10, 31.62, 100
    roots = {"a": 10.0, "b": math.sqrt(1000), "c": 100.0}
    total = sum(roots.values())
    assert examples_proportional(counts, temperature=2.0) == pytest.approx(
        {t: r / total for t, r in roots.items()}
    )
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        examples_proportional(counts, temperature=0)
    with pytest.raises(ConfigError, match="cap must be > 0"):
        examples_proportional(counts, cap=0)


def test_derived_mixture_resolves_from_counts_and_keeps_given_api() -> None:
    mix = examples_proportional_mixture("derived", ["easy_vqa", "easy_vqa_shape"], cap=300)
    assert mix.target_rates({"easy_vqa": 1000, "easy_vqa_shape": 100}) == pytest.approx(
        {"easy_vqa": 0.75, "easy_vqa_shape": 0.25}
    )
    with pytest.raises(ConfigError, match="derives its rates from example counts"):
        mix.rates()
    with pytest.raises(ConfigError, match="none given for"):
        mix.target_rates({"easy_vqa": 5})
    given = MIXTURES.get("demo")
    assert (
        given.target_rates()
        == given.rates()
        == pytest.approx({"easy_vqa": 0.6, "easy_vqa_shape": 0.2, "easy_vqa_caption": 0.2})
    )


@pytest.mark.parametrize(
    ("rates", "message"),
    [
        ({"easy_vqa": -1.0}, "must be a number >= 0"),
        ({"easy_vqa": 0.0, "easy_vqa_shape": 0}, "all rates are zero"),
        ({"easy_vqa": float("nan")}, "must be a number >= 0"),
    ],
)
def test_bad_rates_are_refused(rates: dict[str, float], message: str) -> None:
    with pytest.raises(GeneralistError, match=message):
        mixture_from_rates("bad", rates)


def test_bad_derived_settings_are_refused() -> None:
    with pytest.raises(GeneralistError, match="temperature must be > 0"):
        examples_proportional_mixture("bad", ["easy_vqa"], temperature=-1)
    with pytest.raises(GeneralistError, match="cap must be > 0"):
        Mixture("bad", (("easy_vqa", 1.0),), derived=True, cap=-5)


def test_extreme_rates_are_realized_within_bound() -> None:
    """Med-PaLM M's 0.15 (VQA-RAD) vs 59.90 (MIMIC-CXR report), all 12 tasks, no minimum."""
    mix = Mixture("mmb", MULTIMEDBENCH_RATES)
    target = mix.rates()
    schedule = make_schedule("iid", list(target), target, 3, 64, 0)
    n = 3000 * 64
    got = realized(schedule, 3000)
    for task, p in target.items():
        assert abs(got[task] - p) <= bound(p, n), (task, got[task], p)
    assert got["vqa_rad"] > 0 and got["mimic_cxr_report"] > 0.55


def test_schedule_is_a_pure_function_of_seed_and_position() -> None:
    rates = {"a": 0.5, "b": 0.3, "c": 0.2}
    one = make_schedule("iid", list(rates), rates, 1, 8, 1)
    two = make_schedule("iid", list(rates), rates, 1, 8, 1)
    assert [one.batch(g) for g in (5, 0, 99)] == [two.batch(g) for g in (5, 0, 99)]
    other = make_schedule("iid", list(rates), rates, 2, 8, 1)
    assert [one.batch(g) for g in range(10)] != [other.batch(g) for g in range(10)]


def test_min_per_batch_holds_in_every_global_batch() -> None:
    target = Mixture("mmb", MULTIMEDBENCH_RATES).rates()
    schedule = make_schedule("iid", list(target), target, 0, 16, 1)
    assert schedule.window_batches == 1
    for g in range(500):
        assert set(schedule.batch(g)) == set(range(12)), g
    # rare tasks rise to at least 1 per batch of 16, taken from the largest (the report task)
    got = realized(schedule, 500)
    assert got["vqa_rad"] >= 1 / 16
    assert max(got, key=got.__getitem__) == "mimic_cxr_report"


def test_batch_smaller_than_task_count_round_robins_over_consecutive_batches() -> None:
    """12 tasks, global batch 8 (batch 4 x 2 ranks): every 2 consecutive batches hold all 12."""
    target = Mixture("mmb", MULTIMEDBENCH_RATES).rates()
    assert window_batches(1, 12, 8) == 2
    schedule = make_schedule("iid", list(target), target, 0, 8, 1)
    for window in range(300):
        labels = schedule.batch(2 * window) + schedule.batch(2 * window + 1)
        assert set(labels) == set(range(12)), window
    assert window_batches(2, 3, 4) == 2 and window_batches(1, 3, 3) == 1
