"""The task kinds, in one table: what each reports, how an example is scored, its baseline.

Every place that once switched on a kind's name reads this table instead: Task's defaults
(generalist.catalog.task), the metrics (generalist.eval.metrics.compute, one function per kind
keyed by name and checked complete against KINDS), evaluation (option scoring, the predictions
table's per-example score, the generation budget) and the majority baseline
(generalist.eval.baselines). A new kind is a row here plus its metric function.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from generalist.errors import GeneralistError

TaskKind = Literal["vqa", "classification", "report_generation", "summarization", "medical_qa"]
ExampleScore = Literal["token_f1", "exact_match", "rouge_l"]


@dataclass(frozen=True)
class KindSpec:
    """One kind of task.

    metrics: the metric names it reports (the eval/ keys); primary: the one a leaderboard ranks
        by (the first Med-PaLM M's Table 2 reports).
    example_score: the predictions table's per-example score.
    option_scoring: options also get log-likelihood scores (AUC, ranked accuracy).
    answer_types: metrics split by the record's `answer_type` (VQA's open / closed).
    class_labels: metrics over the task's labels; the majority baseline's option scores are
        one-hot on its answer (a constant ranking: AUC 0.5).
    max_new_tokens: the generation budget unless the task sets its own (one-word answers need
        few; reports and summaries many).
    """

    name: TaskKind
    metrics: tuple[str, ...]
    primary: str
    example_score: ExampleScore
    option_scoring: bool = False
    answer_types: bool = False
    class_labels: bool = False
    max_new_tokens: int = 32


KINDS: dict[str, KindSpec] = {
    spec.name: spec
    for spec in (
        KindSpec(
            "vqa",
            ("bleu1", "token_f1", "exact_match"),
            "bleu1",
            "token_f1",
            answer_types=True,
            max_new_tokens=32,
        ),
        KindSpec(
            "classification",
            ("accuracy", "macro_f1", "macro_auc"),
            "macro_auc",
            "exact_match",
            option_scoring=True,
            class_labels=True,
            max_new_tokens=32,
        ),
        KindSpec(
            "report_generation",
            ("bleu1", "bleu4", "rouge_l", "cider_d", "meteor"),
            "bleu1",
            "rouge_l",
            max_new_tokens=256,
        ),
        KindSpec("summarization", ("rouge_l", "bleu"), "rouge_l", "rouge_l", max_new_tokens=256),
        KindSpec(
            "medical_qa",
            ("accuracy",),
            "accuracy",
            "exact_match",
            option_scoring=True,
            max_new_tokens=32,
        ),
    )
}
assert set(KINDS) == set(get_args(TaskKind)), "KINDS and TaskKind list the same kinds"


def kind_spec(kind: str) -> KindSpec:
    """The kind's row; an unknown kind names the known ones."""
    if kind not in KINDS:
        raise GeneralistError(f"unknown task kind {kind!r}; one of {list(KINDS)}")
    return KINDS[kind]
