"""Training's periodic evaluation (`eval.every`): every rank calls it, since ZeRO-3 forwards are
collective; rank 0 logs eval/<task>/<metric> at the training step.

Under ZeRO-3 each rank holds a slice of every weight. Generating token by token with the slices
gathers every layer's weights for every new token (`synced_gpus`, and each rank must go on
stepping until all are done). Where the whole model fits in the memory left (`fits_whole`),
the pass instead gathers it once (DeepSpeed's `unwrap_model_for_generation`: the weights
gathered, the engine's per-module hooks off) and each rank evaluates on its own copy, without
collectives until the results are gathered. Where it does not fit, evaluation falls back to the
per-token gathers (synced_gpus) and says so once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from generalist.catalog.task import TASKS
from generalist.eval.evaluate import evaluate_tasks
from generalist.eval.generation import HFPredictor
from generalist.eval.records import load_eval_records
from generalist.model.bundle import ModelBundle
from generalist.tracking.tracker import Tracker
from generalist.train.config import TrainConfig
from generalist.train.preflight import training_mixture

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine

log = logging.getLogger(__name__)
HEADROOM = 0.7  # the share of free memory the gathered weights may take (activations need some)


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
    engine: DeepSpeedEngine | None = None,
) -> dict[str, float]:
    """Training's periodic evaluation: every rank calls it (forwards are collective).

    model: the module to run (`engine.module` under DeepSpeed). `cache` (a dict the trainer
    keeps) holds the loaded records between calls. engine: the DeepSpeed engine; under ZeRO-3
    the weights are gathered once for the pass where they fit (see the module docstring).
    Returns the eval/ metrics on rank 0.
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
        with whole_model(engine) as gathered:
            # gathered: every rank has the whole model, so forwards are local (no synced_gpus)
            synced = None if not gathered else False
            predictor = HFPredictor(
                bundle, max_length=cfg.batch.max_length, model=model, synced_gpus=synced
            )
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


def is_zero3(engine: DeepSpeedEngine | None) -> bool:
    return engine is not None and engine.zero_optimization_stage() == 3


def fits_whole(engine: DeepSpeedEngine) -> bool:
    """Whether the gathered weights (less this rank's own slice) fit in HEADROOM of the free
    memory of the device they live on (GPU memory, else the host's)."""
    missing = 0
    for param in engine.module.parameters():
        numel = getattr(param, "ds_numel", param.numel())
        local = getattr(param, "ds_tensor", param).numel()
        missing += (numel - local) * param.element_size()
    device = next(engine.module.parameters()).device
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        import psutil

        free = psutil.virtual_memory().available
    return missing <= HEADROOM * free


_WARNED: set[str] = set()


@contextlib.contextmanager
def whole_model(engine: DeepSpeedEngine | None) -> Iterator[bool]:
    """ZeRO-3 and the whole model fits: the weights gathered once and the engine's hooks off
    for the block (yields True); otherwise nothing changes (yields False). Every rank decides
    alike (the decision is all-reduced: one rank short of memory keeps all on the slow path)."""
    if not is_zero3(engine):
        yield False
        return
    assert engine is not None
    from deepspeed.runtime.zero.stage3 import unwrap_model_for_generation

    from generalist import distributed

    ok = torch.tensor([0 if fits_whole(engine) else 1], dtype=torch.long)
    if distributed.all_reduce_sum(ok.to(engine.device)).item():
        if "fallback" not in _WARNED:
            _WARNED.add("fallback")
            log.warning(
                "evaluation: the gathered model does not fit in memory on every rank; "
                "generating with per-token gathers (synced_gpus), which is much slower"
            )
        yield False
        return
    with unwrap_model_for_generation(engine):
        yield True
