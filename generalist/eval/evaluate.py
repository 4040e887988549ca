"""Evaluation: every task scored with its own metrics, split across ranks, logged to MLflow.

    generalist evaluate CONFIG --checkpoint DIR [--tasks T ...] [--split S] [--max-examples N]
                        [--ablations shots0 blank_image templates] [--batch-size B]
(also under `deepspeed --num_gpus N -m generalist.cli evaluate ...`). Training calls
`evaluate_tasks` every `eval.every` steps with its engine's module
(generalist.train.periodic_eval).

Per task: the first `max_examples` records of the split, formatted as in training but with the
fixed template 0 and seeded exemplars from the dataset's train split (`format_example`,
train=False). Examples are split across ranks in contiguous blocks; the last rank's block is
padded with copies of the last example so every rank runs the same number of batches (ZeRO-3
forwards are collective); results are gathered with their example index, padding dropped, and
each example counted once. Rank 0 computes the metrics (generalist.eval.metrics) on post-processed
text (`Task.postprocess`) and logs
    eval/<task>/<metric>                    the fixed setting
    eval/<task>/shots<k>/<metric>           ablation shots<k>: k exemplars instead of task.shots
    eval/<task>/blank_image/<metric>        ablation blank_image: every image replaced by black
    eval/<task>/template<i>/<metric>        ablation templates: each instruction paraphrase,
    eval/<task>/templates_std/<metric>        and the spread (population std) across them
and a predictions table per task (id, prompt, prompt_format, target, prediction, score; the
prompt is what the model was fed, the chat rendering in a chat run; score = the example's token
F1 for VQA, exact match for choices, ROUGE-L for free text: the kind's `example_score`), and
eval_time/<task>/seconds and eval_time/<task>/examples_per_s (also logged as a line per task).
Generation runs in batches sorted by prompt length with the task's budget
(Task.generation_budget); option scores encode each prompt once (generalist.eval.generation).
Classification and medical QA also get option log-likelihood scores (macro_auc,
ranked_accuracy); see generalist.eval.generation. A task scored per condition (MIMIC-CXR) also
logs eval/<task>/<condition>/<metric> (generalist.eval.metrics.choice).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from generalist import distributed
from generalist.catalog.exemplars import ExemplarPool, format_example
from generalist.catalog.kinds import KINDS
from generalist.catalog.records import Example, Record
from generalist.catalog.task import Task
from generalist.errors import ConfigError
from generalist.eval.generation import Predictor, predict_batched, predict_sorted, with_blank_images
from generalist.eval.metrics.choice import condition_spec
from generalist.eval.metrics.compute import compute_metrics, finite
from generalist.eval.metrics.scorers import ScorerConfig, check_scorers
from generalist.eval.metrics.text import rouge_l, token_f1
from generalist.tracking.run_kinds import primary_metric_tags
from generalist.tracking.tracker import Tracker

ABLATIONS = ("shots0", "shots1", "shots2", "blank_image", "templates")
EXAMPLE_SCORES = {"token_f1": token_f1, "exact_match": lambda t, p: float(t == p)}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EvalExample:
    """An example as evaluation formats it, with what its metrics split by: the record's
    answer type (VQA) and condition (a task scored per condition)."""

    example: Example
    answer_type: str | None = None
    condition: str | None = None


def check_ablations(names: Sequence[str]) -> list[str]:
    for name in names:
        if name not in ABLATIONS:
            raise ConfigError(f"unknown ablation {name!r}; one of {list(ABLATIONS)}")
    return list(names)


def build_examples(
    task: Task,
    records: Sequence[Record],
    pool_records: Sequence[Record] | None,
    seed: int,
    template: int = 0,
    blank_image: bool = False,
) -> list[EvalExample]:
    """Evaluation examples of `records` (template fixed, exemplars seeded from the pool)."""
    pool = ExemplarPool(task, pool_records) if task.shots and pool_records is not None else None
    if task.shots and pool is None:
        task = dataclasses.replace(task, shots=0)  # no train split (e.g. PubMedQA): 0-shot
    spec = condition_spec(task)
    out = []
    for record in records:
        example = format_example(task, record, pool, seed=seed, train=False, template=template)
        if blank_image:
            example = with_blank_images(example)
        answer_type = record.fields.get("answer_type")
        condition = str(record.fields.get(str(spec["field"]))) if spec is not None else None
        out.append(
            EvalExample(example, str(answer_type) if answer_type is not None else None, condition)
        )
    return out


def rank_share(n: int, rank: int, world: int) -> list[tuple[int, bool]]:
    """(example index, is_padding) for `rank`: contiguous blocks of ceil(n / world), the tail
    padded with the last index so every rank has the same count."""
    per = math.ceil(n / world) if n else 0
    return [(min(i, n - 1), i >= n) for i in range(rank * per, rank * per + per)]


def gather_objects(local: list[Any]) -> list[Any]:
    """Concatenate every rank's list (rank order); the list itself in a world of one."""
    import torch.distributed as dist

    if not dist.is_initialized() or dist.get_world_size() == 1:
        return list(local)
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, local)
    return [item for part in parts for item in part]


def predict(
    task: Task, items: Sequence[EvalExample], predictor: Predictor, batch_size: int
) -> list[tuple[str, list[float] | None]]:
    """(prediction, option scores) for every item, computed across ranks and gathered.

    Generation runs in batches of similar prompt length (`predict_sorted`; results come back
    in input order) with the task's budget (`Task.generation_budget`)."""
    rank, world = distributed.rank(), distributed.world_size()
    share = rank_share(len(items), rank, world)
    examples = [items[i].example for i, _ in share]
    options = KINDS[task.kind].option_scoring and bool(examples) and bool(examples[0].options)
    total = len(examples) * (2 if options else 1)  # generation, then option scoring
    desc = f"eval {task.name}"
    budget = task.generation_budget
    with tqdm(total=total, desc=desc, unit="ex", disable=rank != 0, leave=False) as bar:
        texts = predict_sorted(predictor, examples, batch_size, budget, bar)
        scores: list[Any] = [None] * len(examples)
        if options:
            scores = predict_batched(predictor.score_options, examples, batch_size, bar)
    local = [(i, t, s) for (i, pad), t, s in zip(share, texts, scores) if not pad]
    gathered = sorted(gather_objects(local), key=lambda r: r[0])
    if [r[0] for r in gathered] != list(range(len(items))):
        raise RuntimeError(f"task {task.name}: gathered results do not cover every example once")
    return [(t, s) for _, t, s in gathered]


def score_task(
    task: Task,
    items: Sequence[EvalExample],
    results: Sequence[tuple[str, Any]],
    scorers: ScorerConfig | None = None,
    predictor: Predictor | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics and per-example rows from predictions (post-processed as the task says).

    The rows' prompt is what the model was fed (`predictor.fed_prompt`: the chat rendering in
    a chat run), named by `prompt_format`."""
    post = task.postprocess
    kind = KINDS[task.kind]
    targets = [post(i.example.target) for i in items]
    preds = [post(text) for text, _ in results]
    scores = [s for _, s in results]
    kwargs: dict[str, Any] = {}
    if kind.answer_types:
        types = [i.answer_type for i in items]
        kwargs["answer_types"] = types if all(t is not None for t in types) else None
    if kind.option_scoring and all(s is not None for s in scores):
        kwargs["option_scores"] = scores
        if not kind.class_labels:  # classification ranks its labels, not per-example options
            kwargs["options"] = [[post(o) for o in i.example.options] for i in items]
    if kind.class_labels:
        kwargs["labels"] = [post(label) for label in task.labels]
        if condition_spec(task) is not None:
            kwargs["conditions"] = [i.condition for i in items]
    values = compute_metrics(task, targets, preds, scorers=scorers, **kwargs)
    example_score = EXAMPLE_SCORES.get(kind.example_score, lambda t, p: rouge_l([t], [p]))
    fed = getattr(predictor, "fed_prompt", None) if predictor is not None else None
    fmt = getattr(predictor, "prompt_format", "raw") if predictor is not None else "raw"
    rows = [
        {
            "id": item.example.id,
            "prompt": fed(item.example) if fed is not None else item.example.prompt,
            "prompt_format": fmt,
            "target": item.example.target,
            "prediction": pred,
            "score": example_score(target, pred),
        }
        for item, target, pred in zip(items, targets, preds)
    ]
    return finite(values), rows


def evaluate_task(
    task: Task,
    records: Sequence[Record],
    pool: Sequence[Record] | None,
    predictor: Predictor,
    *,
    seed: int = 0,
    batch_size: int = 8,
    ablations: Sequence[str] = (),
    scorers: ScorerConfig | None = None,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """One task's eval/ metrics (with ablations) and prediction rows; ({}, []) off rank 0."""

    def run(t: Task, template: int = 0, blank: bool = False) -> tuple[dict, list]:
        items = build_examples(t, records, pool, seed, template, blank)
        results = predict(t, items, predictor, batch_size)
        if not distributed.is_main():
            return {}, []
        return score_task(t, items, results, scorers, predictor)

    values, rows = run(task)
    runs: dict[str, dict[str, float]] = {"": values}
    for name in ablations:
        if name.startswith("shots") and int(name[5:]) != task.shots:
            runs[f"{name}/"] = run(dataclasses.replace(task, shots=int(name[5:])))[0]
        elif name == "blank_image" and any(r.images for r in records):
            runs["blank_image/"] = run(task, blank=True)[0]
        elif name == "templates":
            per = [values] + [run(task, i)[0] for i in range(1, len(task.instructions))]
            runs.update({f"template{i}/": v for i, v in enumerate(per)})
            runs["templates_std/"] = {
                key: _std([v[key] for v in per if key in v]) for key in values
            }
    prefix = f"eval/{task.name}"
    return {f"{prefix}/{sub}{k}": v for sub, vals in runs.items() for k, v in vals.items()}, rows


def _std(xs: Sequence[float]) -> float:
    """Population standard deviation (the spread across instruction paraphrases)."""
    mean = sum(xs) / len(xs)
    return math.sqrt(sum((x - mean) ** 2 for x in xs) / len(xs))


def evaluate_tasks(
    tasks: Sequence[Task],
    records: Mapping[str, Sequence[Record]],
    pool_records: Mapping[str, Sequence[Record] | None],
    predictor: Predictor,
    *,
    seed: int = 0,
    batch_size: int = 8,
    ablations: Sequence[str] = (),
    tracker: Tracker | None = None,
    step: int = 0,
    scorers: ScorerConfig | None = None,
) -> dict[str, float]:
    """Score every task (and ablation); log on rank 0. Returns the eval/ metrics (rank 0).

    Every rank must call it (generation and gathering are collective). scorers: where the
    clinical report scorers' weights are (eval.scorers), checked before anything is generated.
    The run is tagged with each task's primary metric (`generalist.primary_metric.<task>`), so
    a leaderboard can rank tasks whose module it has not imported."""
    check_ablations(ablations)
    check_scorers(tasks, scorers)
    main = distributed.is_main()
    if tracker is not None and main:
        tracker.set_tags(primary_metric_tags(tasks))
    out: dict[str, float] = {}
    timing: dict[str, float] = {}
    for task in tasks:
        start = time.perf_counter()
        values, rows = evaluate_task(
            task,
            records[task.name],
            pool_records.get(task.name),
            predictor,
            seed=seed,
            batch_size=batch_size,
            ablations=ablations,
            scorers=scorers,
        )
        seconds = time.perf_counter() - start
        n = len(records[task.name])
        timing[f"eval_time/{task.name}/seconds"] = seconds
        timing[f"eval_time/{task.name}/examples_per_s"] = n / seconds if seconds > 0 else 0.0
        if main:
            log.info(
                "eval %s: %d examples in %.1f s (%.2f examples/s)",
                task.name,
                n,
                seconds,
                timing[f"eval_time/{task.name}/examples_per_s"],
            )
        out.update(values)
        if tracker is not None and rows:
            tracker.log_table(f"predictions/{task.name}/step-{step}", rows)
    if tracker is not None and main:
        tracker.log_metrics({**out, **timing}, step=step)
    return out
