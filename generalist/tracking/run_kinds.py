"""What kind of run an MLflow run is, and the tags that say so.

Every run generalist creates carries `generalist.kind` (KIND_TAG), one of RUN_KINDS:
    training      `generalist train` (one run per training job, periodic evaluations included)
    evaluation    `generalist evaluate`: one checkpoint, named "<training run> @ <checkpoint>"
    baseline      a reference that is not a model (the demo's majority-answer run)
    leaderboard   `generalist leaderboard`: its md/csv/png as artifacts; ranks no run itself
so filtering the MLflow runs table by `tags.generalist.kind` is complete. Runs that score tasks
also carry `generalist.primary_metric.<task>` (the metric the leaderboard ranks that task by),
so a leaderboard can rank tasks whose module it has not imported.
"""

from __future__ import annotations

from collections.abc import Iterable

from generalist.catalog.task import Task

KIND_TAG = "generalist.kind"
RUN_KINDS = ("training", "evaluation", "baseline", "leaderboard")
PRIMARY_TAG = "generalist.primary_metric."


def check_kind(kind: str) -> str:
    """`kind` when it is one of RUN_KINDS, else ValueError naming them."""
    if kind not in RUN_KINDS:
        raise ValueError(f"unknown run kind {kind!r}; one of {list(RUN_KINDS)}")
    return kind


def primary_metric_tags(tasks: Iterable[Task]) -> dict[str, str]:
    """{"generalist.primary_metric.<task>": metric} for the tasks a run scores."""
    return {f"{PRIMARY_TAG}{task.name}": task.primary_metric for task in tasks}
