"""Mixture declarations: a named list of (task, rate); rates are normalised over the tasks used.

Rates are given (`Mixture(name, tasks=(("a", 3.0), ("b", 1.0)))`) or derived from the number of
training examples, examples-proportional with a cap and a temperature as seqio does
(`examples_proportional_mixture(name, ["a", "b"], cap=2**16, temperature=2.0)`); then the rate
in `tasks` is a per-task scale on the example count. `target_rates(counts)` resolves either
kind; the stream passes the train-split counts from the shard manifests. Derived rates are
`min(scale * n_examples, cap) ** (1 / temperature)`, then normalised.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from generalist.catalog.loading import load_builtins
from generalist.catalog.registry import Registry
from generalist.catalog.task import TASKS
from generalist.errors import ConfigError, GeneralistError

# How the stream orders a mixture's tasks (generalist/mixing/schedule.py has both).
SCHEDULES = ("stratified", "iid")


@dataclass(frozen=True)
class Mixture:
    """Tasks and their sampling rates (any positive scale; normalised when used).

    min_per_batch: at least this many examples of every task in each global batch
    (Med-PaLM M asks for one); see generalist/mixing/schedule.py for batches smaller than the
    task count. schedule: "stratified" (every prefix within one example of its rates) or "iid"
    (windows drawn at random from the rates); see generalist/mixing/schedule.py.
    """

    name: str
    tasks: tuple[tuple[str, float], ...]
    description: str = ""
    notes: str = ""
    min_per_batch: int = 0
    derived: bool = False  # examples-proportional: rates below are scales on example counts
    cap: float | None = None  # derived only: at most this many examples count per task
    temperature: float = 1.0  # derived only: > 1 flattens the rates towards uniform
    schedule: str = "stratified"

    def __post_init__(self) -> None:
        where = f"mixture {self.name!r}"
        if not self.tasks:
            raise GeneralistError(f"{where}: list at least one (task, rate)")
        seen = set()
        for task, rate in self.tasks:
            if task in seen:
                raise GeneralistError(f"{where}: task {task!r} is listed twice")
            seen.add(task)
            if not isinstance(rate, int | float) or not math.isfinite(rate) or rate < 0:
                raise GeneralistError(
                    f"{where}: rate of {task!r} must be a number >= 0, got {rate!r}"
                )
        if sum(rate for _, rate in self.tasks) <= 0:
            raise GeneralistError(f"{where}: all rates are zero; give at least one task a rate > 0")
        if self.min_per_batch < 0:
            raise GeneralistError(f"{where}: min_per_batch must be >= 0")
        if self.cap is not None and not self.cap > 0:
            raise GeneralistError(f"{where}: cap must be > 0 (or None), got {self.cap!r}")
        if not self.temperature > 0:
            raise GeneralistError(f"{where}: temperature must be > 0, got {self.temperature!r}")
        if self.schedule not in SCHEDULES:
            raise GeneralistError(
                f"{where}: schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}"
            )

    def rates(self, only: Iterable[str] | None = None) -> dict[str, float]:
        """Normalised rates (summing to 1), over `only` those tasks when given; checks names.

        Given rates only: a derived mixture needs example counts, see `target_rates`.
        """
        if self.derived:
            raise ConfigError(
                f"mixture {self.name!r} derives its rates from example counts; "
                f"call target_rates(counts) (the stream reads counts from the shard manifests)"
            )
        for task, _ in self.tasks:
            TASKS.get(task)  # unknown task -> error with close matches
        keep = set(only) if only is not None else None
        chosen = {t: r for t, r in self.tasks if (keep is None or t in keep) and r > 0}
        total = sum(chosen.values())
        if total <= 0:
            raise GeneralistError(
                f"mixture {self.name!r}: none of its tasks with a rate > 0 are present "
                f"(have {sorted(keep or [])}, mixture lists {[t for t, _ in self.tasks]})"
            )
        return {t: r / total for t, r in chosen.items()}

    def target_rates(
        self, counts: Mapping[str, int] | None = None, only: Iterable[str] | None = None
    ) -> dict[str, float]:
        """Normalised rates; derived mixtures compute them from `counts` (task -> examples)."""
        if not self.derived:
            return self.rates(only)
        for task, _ in self.tasks:
            TASKS.get(task)
        keep = set(only) if only is not None else None
        scales = {t: r for t, r in self.tasks if (keep is None or t in keep) and r > 0}
        missing = [t for t in scales if counts is None or t not in counts]
        if missing:
            raise ConfigError(
                f"mixture {self.name!r} derives rates from example counts; none given for {missing}"
            )
        assert counts is not None
        return examples_proportional(
            {t: counts[t] for t in scales}, self.cap, self.temperature, scales
        )


def examples_proportional(
    counts: Mapping[str, int],
    cap: float | None = None,
    temperature: float = 1.0,
    scales: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Normalised examples-proportional rates (seqio's `mixing_rate_num_examples`).

    counts: training examples per task; cap: at most this many examples count per task (None:
    no cap); temperature > 1 flattens the rates towards uniform; scales: per-task multipliers
    applied to the count before the cap (0 drops a task).
    """
    if cap is not None and not cap > 0:
        raise ConfigError(f"examples-proportional cap must be > 0 (or None), got {cap!r}")
    if not (isinstance(temperature, int | float) and temperature > 0):
        raise ConfigError(f"examples-proportional temperature must be > 0, got {temperature!r}")
    raw: dict[str, float] = {}
    for task, count in counts.items():
        value = float(count) * float((scales or {}).get(task, 1.0))
        if cap is not None:
            value = min(value, float(cap))
        raw[task] = value ** (1.0 / temperature) if value > 0 else 0.0
    return normalise(raw, what="examples-proportional rates (every task has 0 examples)")


def normalise(rates: Mapping[str, float], what: str = "rates") -> dict[str, float]:
    """Rates scaled to sum to 1, tasks with rate 0 dropped; ConfigError if nothing is left."""
    for task, rate in rates.items():
        if not isinstance(rate, int | float) or not math.isfinite(rate) or rate < 0:
            raise ConfigError(f"rate of task {task!r} must be a finite number >= 0, got {rate!r}")
    total = sum(rates.values())
    if total <= 0:
        raise ConfigError(f"{what}: all zero; give at least one task a rate > 0")
    return {t: r / total for t, r in rates.items() if r > 0}


MIXTURES: Registry[Mixture] = Registry("mixture", load_builtins)


def mixture_from_rates(name: str, rates: Mapping[str, float], **kwargs: object) -> Mixture:
    """Build a Mixture from a {task: rate} mapping (configs give mixtures inline this way)."""
    return Mixture(name=name, tasks=tuple(rates.items()), **kwargs)  # type: ignore[arg-type]


def examples_proportional_mixture(
    name: str,
    tasks: Iterable[str],
    cap: float | None = None,
    temperature: float = 1.0,
    **kwargs: object,
) -> Mixture:
    """A Mixture whose rates follow the tasks' train example counts (seqio's rate_num_examples)."""
    return Mixture(  # type: ignore[arg-type]
        name=name,
        tasks=tuple((t, 1.0) for t in tasks),
        derived=True,
        cap=cap,
        temperature=temperature,
        **kwargs,
    )
