"""`compute_metrics`: the one entry point, a task's metrics by its kind.

Inputs are already post-processed strings (`Task.postprocess`, by default
`generalist.catalog.task.normalize_text`); normalisation is not this package's job, except the
whitespace normalisation pycocoevalcap's line-based tokenizer needs (done inside it). Keys
match `generalist.catalog.kinds.KINDS` and each task's `metrics`; every value is in
[0, 1] except CIDEr-D (0-10).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from generalist.catalog.kinds import KINDS, kind_spec
from generalist.catalog.task import Task
from generalist.errors import GeneralistError
from generalist.eval.metrics.captions import COCO_METRICS, caption_metrics
from generalist.eval.metrics.choice import (
    classification_metrics,
    condition_spec,
    medical_qa_metrics,
    per_condition_metrics,
)
from generalist.eval.metrics.scorers import ScorerConfig, clinical_metrics
from generalist.eval.metrics.text import summarization_metrics, vqa_metrics


def compute_metrics(
    task: Task,
    targets: Sequence[str],
    predictions: Sequence[str],
    *,
    answer_types: Sequence[str] | None = None,
    options: Sequence[Sequence[str]] | None = None,
    option_scores: Sequence[Sequence[float]] | None = None,
    labels: Sequence[str] | None = None,
    conditions: Sequence[str] | None = None,
    scorers: ScorerConfig | None = None,
    f1_labels: Literal["present", "all"] = "present",
) -> dict[str, float]:
    """The metrics of `task` (a generalist.catalog.task.Task) by its kind.

    labels: the class labels as the targets are written (default task.labels; evaluation
    passes them post-processed like the targets). conditions: each example's condition, for a
    task scored per condition (Task.extra["macro_over"]). scorers: where the clinical report
    scorers' weights are (eval.scorers).
    """
    inputs = KindInputs(answer_types, options, option_scores, labels, conditions, scorers)
    return KIND_METRIC_FNS[kind_spec(task.kind).name](task, targets, predictions, inputs, f1_labels)


@dataclass(frozen=True)
class KindInputs:
    """What a kind's metrics may read beside targets and predictions (compute_metrics' keywords)."""

    answer_types: Sequence[str] | None = None
    options: Sequence[Sequence[str]] | None = None
    option_scores: Sequence[Sequence[float]] | None = None
    labels: Sequence[str] | None = None
    conditions: Sequence[str] | None = None
    scorers: ScorerConfig | None = None


MetricFn = Callable[
    [Task, Sequence[str], Sequence[str], KindInputs, Literal["present", "all"]], dict[str, float]
]
# One metrics function per kind of generalist.catalog.kinds.KINDS (checked complete below).
KIND_METRIC_FNS: dict[str, MetricFn] = {
    "vqa": lambda task, t, p, x, f1: vqa_metrics(t, p, x.answer_types),
    "classification": lambda task, t, p, x, f1: _classification(
        task, t, p, x.labels, x.option_scores, x.conditions, f1
    ),
    "medical_qa": lambda task, t, p, x, f1: medical_qa_metrics(t, p, x.options, x.option_scores),
    "report_generation": lambda task, t, p, x, f1: report_generation_metrics(
        t, p, task.metrics, x.scorers
    ),
    "summarization": lambda task, t, p, x, f1: summarization_metrics(t, p),
}
if set(KIND_METRIC_FNS) != set(KINDS):
    raise GeneralistError(f"metric functions for {sorted(KIND_METRIC_FNS)}, kinds {sorted(KINDS)}")


def report_generation_metrics(
    targets: Sequence[str],
    predictions: Sequence[str],
    metrics: Sequence[str] = COCO_METRICS,
    scorers: ScorerConfig | None = None,
) -> dict[str, float]:
    """pycocoevalcap BLEU-1/4, CIDEr-D, METEOR, ROUGE-L, and the clinical CheXbert / RadGraph
    F1s among `metrics`."""
    out = caption_metrics(targets, predictions, [m for m in metrics if m in COCO_METRICS])
    out.update(clinical_metrics(targets, predictions, metrics, scorers))
    return out


def _classification(
    task: Task,
    targets: Sequence[str],
    predictions: Sequence[str],
    labels: Sequence[str] | None,
    option_scores: Sequence[Sequence[float]] | None,
    conditions: Sequence[str] | None,
    f1_labels: Literal["present", "all"],
) -> dict[str, float]:
    labels = list(task.labels if labels is None else labels)
    out = classification_metrics(targets, predictions, labels, option_scores, f1_labels)
    spec = condition_spec(task)
    if spec is None:
        return out
    if conditions is None:
        raise GeneralistError(
            f"task {task.name!r} is scored per {spec['field']}: pass each example's "
            f"{spec['field']} (conditions=...)"
        )
    # The pooled yes/no figures keep their own names; macro_* become the per-condition means.
    out["pooled_macro_f1"] = out.pop("macro_f1")
    if "macro_auc" in out:
        out["pooled_auc"] = out.pop("macro_auc")
    positive = labels[list(task.labels).index(spec["positive"])]
    order = [str(v) for v in spec["values"]]  # type: ignore[union-attr]
    out.update(
        per_condition_metrics(
            targets, predictions, conditions, order, positive, labels, option_scores
        )
    )
    return out


def finite(metrics: Mapping[str, float]) -> dict[str, float]:
    """Drop NaN/inf values (undefined metrics, e.g. AUC with one class) before logging."""
    return {k: v for k, v in metrics.items() if math.isfinite(v)}
