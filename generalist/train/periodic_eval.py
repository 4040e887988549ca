"""Training's periodic evaluation (`eval.every`): every rank calls it, since ZeRO-3 forwards are
collective; rank 0 logs eval/<task>/<metric> at the training step."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from generalist.catalog.task import TASKS
from generalist.eval.evaluate import evaluate_tasks
from generalist.eval.generation import HFPredictor
from generalist.eval.records import load_eval_records
from generalist.model.bundle import ModelBundle
from generalist.tracking.tracker import Tracker
from generalist.train.config import TrainConfig
from generalist.train.preflight import training_mixture


def eval_task_names(cfg: TrainConfig, requested: Sequence[str]) -> list[str]:
    """--tasks, else eval.tasks, else the training mixture's tasks (rate > 0)."""
    if requested:
        return list(requested)
    if cfg.eval.tasks:
        return list(cfg.eval.tasks)
    return [name for name, rate in training_mixture(cfg).tasks if rate > 0]


def periodic_evaluation(
    cfg: TrainConfig,
    bundle: ModelBundle,
    model: torch.nn.Module,
    step: int,
    tracker: Tracker | None = None,
    cache: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Training's periodic evaluation: every rank calls it (forwards are collective).

    model: the module to run (`engine.module` under DeepSpeed). `cache` (a dict the trainer
    keeps) holds the loaded records between calls. Returns the eval/ metrics on rank 0.
    """
    cache = cache if cache is not None else {}
    if "tasks" not in cache:
        tasks = [TASKS.get(n) for n in eval_task_names(cfg, [])]
        split = cfg.eval.split
        cache["tasks"] = tasks
        cache["data"] = load_eval_records(tasks, cfg.shards, split, cfg.eval.max_examples)
    records, pools = cache["data"]
    was_training = model.training
    model.eval()
    try:
        predictor = HFPredictor(bundle, max_length=cfg.batch.max_length, model=model)
        return evaluate_tasks(
            cache["tasks"],
            records,
            pools,
            predictor,
            seed=cfg.seed,
            batch_size=cfg.batch.micro_batch_size,
            tracker=tracker,
            step=step,
            scorers=cfg.eval.scorers,
        )
    finally:
        model.train(was_training)
