"""The stratified schedule: every global batch end within one example of rate x position (and
positions inside a batch between their batch ends' counts), the per-batch minimum, seeded
order, and the schedule recorded in (and checked by) the stream state."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import numpy as np
import pytest
from generalist.mixtures.multimedbench import MULTIMEDBENCH_RATES

from generalist.catalog.mixture import Mixture, mixture_from_rates
from generalist.errors import ConfigError, GeneralistError
from generalist.mixing.quota import effective_rates
from generalist.mixing.schedule import make_schedule
from generalist.mixing.stream import build_stream

TOLERANCE = 1 + 1e-9  # the bound is strict in exact arithmetic; floats add ~1e-12 at 100k


def normalised(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {t: w / total for t, w in weights.items()}


def labels(schedule, n: int) -> np.ndarray:
    """The first n labels of the global sequence, batch by batch."""
    out: list[int] = []
    for g in itertools.count():
        if len(out) >= n:
            return np.array(out[:n])
        out += schedule.batch(g)
    raise AssertionError("unreachable")


def worst_prefix_error(seq: np.ndarray, rates: list[float], every: int = 1) -> float:
    """max over tasks and over the prefix lengths every, 2 x every, ... of |count - rate x
    length| (every = the global batch: the stratified guarantee's batch ends)."""
    onehot = np.zeros((len(seq), len(rates)), dtype=np.int64)
    onehot[np.arange(len(seq)), seq] = 1
    counts = np.cumsum(onehot, axis=0)[every - 1 :: every]
    positions = np.arange(every, len(seq) + 1, every)[:, None]
    return float(np.abs(counts - positions * np.array(rates)[None, :]).max())


RATE_SETS = {
    "multimedbench": dict(MULTIMEDBENCH_RATES),  # 0.15 (VQA-RAD) vs 59.90 (MIMIC-CXR report)
    "two_extreme": {"vqa_rad": 0.15, "mimic_cxr_report": 59.90},
    "demo": {"easy_vqa": 3.0, "easy_vqa_shape": 1.0, "easy_vqa_caption": 1.0},
    # seven frequent tasks about to pass an integer while three rare ones lead: the case
    # that breaks a largest-remainder boundary (counts would have to fall behind)
    "crowded": {
        **{f"big{i}": 0.14086 for i in range(7)},
        **{f"rare{i}": 0.00467 for i in range(3)},
    },
    "twenty": {f"t{i}": random.Random(i).random() ** 3 + 0.002 for i in range(20)},
}


@pytest.mark.parametrize("name", sorted(RATE_SETS))
def test_every_batch_end_up_to_100k_is_within_one_example(name: str) -> None:
    rates = normalised(RATE_SETS[name])
    tasks = list(rates)
    for global_batch, seed in ((64, 0), (7, 3)):
        schedule = make_schedule("stratified", tasks, rates, seed, global_batch, 0)
        seq = labels(schedule, 100_000 // global_batch * global_batch)
        worst = worst_prefix_error(seq, [rates[t] for t in tasks], global_batch)
        assert worst <= TOLERANCE, (name, seed)


def test_iid_is_off_by_many_examples_where_stratified_is_not() -> None:
    rates = normalised(RATE_SETS["demo"])
    iid = labels(make_schedule("iid", list(rates), rates, 0, 32, 0), 6000)
    assert worst_prefix_error(iid, list(rates.values())) > 5  # a random mixer drifts


def test_min_per_batch_holds_and_the_bound_holds_for_the_effective_rates() -> None:
    rates = Mixture("mmb", MULTIMEDBENCH_RATES).rates()
    tasks = list(rates)
    schedule = make_schedule("stratified", tasks, rates, 0, 16, 1)
    seq = labels(schedule, 16 * 2000)
    for g in range(2000):
        assert set(seq[16 * g : 16 * (g + 1)].tolist()) == set(range(12)), g
    effective = [schedule.effective_rates[t] for t in tasks]
    assert sum(effective) == pytest.approx(1.0)
    assert worst_prefix_error(seq, effective, 16) <= TOLERANCE
    # the rare tasks get exactly one per batch of 16, the report task keeps the largest share
    assert schedule.effective_rates["vqa_rad"] == pytest.approx(1 / 16)
    assert max(effective) == schedule.effective_rates["mimic_cxr_report"]
    # 12 tasks, batches of 8: every aligned pair of batches holds all 12
    small = labels(make_schedule("stratified", tasks, rates, 0, 8, 1), 8 * 600)
    for w in range(300):
        assert set(small[16 * w : 16 * (w + 1)].tolist()) == set(range(12)), w


def test_effective_rates_keep_proportions_of_the_free_tasks() -> None:
    from fractions import Fraction

    got = effective_rates([Fraction(6), Fraction(3), Fraction(1, 100)], 20, 1)
    assert got[2] == Fraction(1, 20)  # 0.002 x 20 < 2: exactly one per window
    assert got[0] / got[1] == 2 and sum(got) == 1
    assert effective_rates([Fraction(1), Fraction(1)], 3, 1) == [Fraction(2, 3), Fraction(1, 3)]


def test_windows_are_a_pure_function_of_seed_and_index() -> None:
    rates = normalised(RATE_SETS["multimedbench"])
    one = make_schedule("stratified", list(rates), rates, 5, 64, 0)
    two = make_schedule("stratified", list(rates), rates, 5, 64, 0)
    sequential = [one.window(w).labels for w in range(6)]
    assert [two.window(w).labels for w in (5, 0, 3, 1, 4, 2)] == [
        sequential[w] for w in (5, 0, 3, 1, 4, 2)
    ]
    far = one.window(10**9)  # any position: no earlier window is computed
    assert len(far.labels) == one.window_size
    assert far.before == one.boundary(10**9 * one.window_size)
    other = make_schedule("stratified", list(rates), rates, 6, 64, 0)
    assert [other.window(w).labels for w in range(6)] != sequential  # the seed deals the order


def test_unknown_schedule_is_refused(shard_root: Path) -> None:
    with pytest.raises(GeneralistError, match=r"schedule must be one of \['stratified', 'iid'\]"):
        mixture_from_rates("bad", {"st_task_many": 1.0}, schedule="sorted")
    with pytest.raises(ConfigError, match="schedule must be one of"):
        build_stream(mixture_from_rates("m", {"st_task_many": 1.0}), shard_root, schedule="x")


def test_stream_counts_stay_within_one_example_of_the_targets(shard_root: Path) -> None:
    mix = mixture_from_rates("m", {"st_task_many": 59.90, "st_task_few": 0.15, "st_task_tiny": 10})
    stream = build_stream(mix, shard_root, seed=0, batch_size=8)
    counts = dict.fromkeys(stream.target_rates, 0)
    for n, example in enumerate(itertools.islice(iter(stream), 3000), 1):
        counts[example.task] += 1
        for task, rate in stream.target_rates.items():
            if n % 8 == 0:  # a global batch end
                assert abs(counts[task] - rate * n) <= TOLERANCE, (n, task)
            else:  # inside a batch: within one example plus what the batch holds
                assert abs(counts[task] - rate * n) <= TOLERANCE + 8, (n, task)
    assert stream.state_dict()["config"]["schedule"] == "stratified"


def test_resume_refuses_a_state_of_the_other_schedule(shard_root: Path) -> None:
    mix = mixture_from_rates("m", {"st_task_many": 3.0, "st_task_few": 1.0})
    iid = build_stream(mix, shard_root, seed=2, batch_size=4, schedule="iid")
    list(itertools.islice(iter(iid), 10))
    state = iid.state_dict()
    with pytest.raises(ConfigError, match="schedule: saved 'iid', now 'stratified'"):
        build_stream(mix, shard_root, seed=2, batch_size=4).load_state_dict(state)
    resumed = build_stream(mix, shard_root, seed=2, batch_size=4, schedule="iid")
    resumed.load_state_dict(state)
    whole = build_stream(mix, shard_root, seed=2, batch_size=4, schedule="iid")
    expected = [e.id for e in itertools.islice(iter(whole), 30)][10:]
    assert [e.id for e in itertools.islice(iter(resumed), 20)] == expected


def test_the_training_config_selects_the_schedule(tmp_path: Path) -> None:
    from generalist.train.config import load_config

    config = tmp_path / "run.yaml"
    config.write_text("mixture: demo\nmodel: {name_or_path: x}\n")
    assert load_config(config).schedule is None  # the mixture's: stratified
    assert load_config(config, ["schedule=iid"]).schedule == "iid"
    with pytest.raises(ConfigError, match="schedule"):
        load_config(config, ["schedule=sorted"])
