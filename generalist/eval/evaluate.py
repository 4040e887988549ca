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
and a predictions table per task (id, prompt, target, prediction, score; score = the example's
token F1 for VQA, exact match for choices, ROUGE-L for free text).
Classification and medical QA also get option log-likelihood scores (macro_auc,
ranked_accuracy); see generalist.eval.generation. A task scored per condition (MIMIC-CXR) also
logs eval/<task>/<condition>/<metric> (generalist.eval.metrics.choice).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tqdm import tqdm

from generalist.catalog.exemplars import ExemplarPool, format_example
from generalist.catalog.records import Example, Record
from generalist.catalog.task import Task
from generalist.errors import ConfigError
from generalist.eval.generation import Predictor, predict_batched, with_blank_images
from generalist.eval.metrics.choice import condition_spec
from generalist.eval.metrics.compute import compute_metrics, finite
from generalist.eval.metrics.scorers import ScorerConfig, check_scorers
from generalist.eval.metrics.text import rouge_l, token_f1
from generalist.tracking.run_kinds import primary_metric_tags
from generalist.tracking.tracker import Tracker

ABLATIONS = ("shots0", "shots1", "shots2", "blank_image", "templates")
OPTION_KINDS = ("classification", "medical_qa")


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


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def predict(
    task: Task, items: Sequence[EvalExample], predictor: Predictor, batch_size: int
) -> list[tuple[str, list[float] | None]]:
    """(prediction, option scores) for every item, computed across ranks and gathered."""
    rank, world = _rank_world()
    share = rank_share(len(items), rank, world)
    examples = [items[i].example for i, _ in share]
    options = task.kind in OPTION_KINDS and bool(examples) and bool(examples[0].options)
    total = len(examples) * (2 if options else 1)  # generation, then option scoring
    desc = f"eval {task.name}"
    with tqdm(total=total, desc=desc, unit="ex", disable=rank != 0, leave=False) as bar:
        texts = predict_batched(predictor.generate, examples, batch_size, bar)
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
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Metrics and per-example rows from predictions (post-processed as the task says)."""
    post = task.postprocess
    targets = [post(i.example.target) for i in items]
    preds = [post(text) for text, _ in results]
    scores = [s for _, s in results]
    has_scores = all(s is not None for s in scores) and task.kind in OPTION_KINDS
    kwargs: dict[str, Any] = {}
    if task.kind == "vqa":
        types = [i.answer_type for i in items]
        kwargs["answer_types"] = types if all(t is not None for t in types) else None
    if has_scores:
        kwargs["option_scores"] = scores
        kwargs["options"] = [[post(o) for o in i.example.options] for i in items]
    if task.kind == "classification":
        kwargs.pop("options", None)
        kwargs["labels"] = [post(label) for label in task.labels]
        if condition_spec(task) is not None:
            kwargs["conditions"] = [i.condition for i in items]
    values = compute_metrics(task, targets, preds, scorers=scorers, **kwargs)
    rows = []
    for item, target, pred in zip(items, targets, preds):
        if task.kind == "vqa":
            score = token_f1(target, pred)
        elif task.kind in OPTION_KINDS:
            score = float(target == pred)
        else:
            score = rouge_l([target], [pred])
        ex = item.example
        rows.append(
            {
                "id": ex.id,
                "prompt": ex.prompt,
                "target": ex.target,
                "prediction": pred,
                "score": score,
            }
        )
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
    rank, _ = _rank_world()

    def run(t: Task, template: int = 0, blank: bool = False) -> dict[str, Any]:
        items = build_examples(t, records, pool, seed, template, blank)
        results = predict(t, items, predictor, batch_size)
        values, rows = score_task(t, items, results, scorers) if rank == 0 else ({}, [])
        return {"values": values, "rows": rows}

    base = run(task)
    values = base["values"]
    prefix = f"eval/{task.name}"
    out = {f"{prefix}/{k}": v for k, v in values.items()}
    for name in ablations:
        if name.startswith("shots") and int(name[5:]) != task.shots:
            extra = run(dataclasses.replace(task, shots=int(name[5:])))["values"]
            out.update({f"{prefix}/{name}/{k}": v for k, v in extra.items()})
        elif name == "blank_image" and any(r.images for r in records):
            extra = run(task, blank=True)["values"]
            out.update({f"{prefix}/blank_image/{k}": v for k, v in extra.items()})
        elif name == "templates":
            per = [values] + [run(task, i)["values"] for i in range(1, len(task.instructions))]
            for i, v in enumerate(per):
                out.update({f"{prefix}/template{i}/{k}": x for k, x in v.items()})
            for key in values:
                xs = [v[key] for v in per if key in v]
                mean = sum(xs) / len(xs)
                out[f"{prefix}/templates_std/{key}"] = math.sqrt(
                    sum((x - mean) ** 2 for x in xs) / len(xs)
                )
    return out, base["rows"]


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
    rank, _ = _rank_world()
    if tracker is not None and rank == 0:
        tracker.set_tags(primary_metric_tags(tasks))
    out: dict[str, float] = {}
    for task in tasks:
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
        out.update(values)
        if tracker is not None and rows:
            tracker.log_table(f"predictions/{task.name}/step-{step}", rows)
    if tracker is not None and rank == 0:
        tracker.log_metrics(out, step=step)
    return out
