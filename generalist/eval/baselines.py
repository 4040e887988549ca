"""Baselines a trained model must beat: the majority answer of the train split."""

from __future__ import annotations

import collections
from collections.abc import Iterable

from generalist.catalog.kinds import KINDS
from generalist.catalog.records import Record
from generalist.catalog.task import Task
from generalist.eval.metrics.choice import condition_spec
from generalist.eval.metrics.compute import compute_metrics, finite


def majority_answer(
    task: Task, train: Iterable[Record], held_out: Iterable[Record]
) -> tuple[str, dict[str, float]]:
    """(the train split's most common target, the metrics of answering it for every held-out
    record). Classification: a constant answer ranks the options the same for every example,
    so its AUC is 0.5."""
    counts = collections.Counter(task.parts_of(r).target for r in train)
    majority = counts.most_common(1)[0][0]
    records = list(held_out)
    parts = [task.parts_of(r) for r in records]
    targets = [task.postprocess(p.target) for p in parts]
    predictions = [task.postprocess(majority)] * len(parts)
    kind = KINDS[task.kind]
    kwargs = {}
    if kind.answer_types:
        kwargs["answer_types"] = [str(r.fields.get("answer_type", "")) for r in records]
    if kind.class_labels:
        kwargs["labels"] = [task.postprocess(label) for label in task.labels]
        one_hot = [float(label == majority) for label in task.labels]
        kwargs["option_scores"] = [one_hot] * len(parts)
        spec = condition_spec(task)
        if spec is not None:
            kwargs["conditions"] = [str(r.fields.get(str(spec["field"]))) for r in records]
    return majority, finite(compute_metrics(task, targets, predictions, **kwargs))
