"""The training run: setup functions (generalist.train.setup), then one loop.

The loop: the step's micro-batches from the mixture stream (all of its accumulation window, so
the loss is normalised over the global batch: generalist.train.step), engine forward,
backward, step; per-task loss from the per-example loss; a progress bar and logging on rank 0
(metrics.jsonl always, MLflow unless logging.mlflow is false); periodic evaluation; checkpoints
(generalist.train.checkpoint) every `checkpoint.every` steps and at the end. Config errors stop
the run before any of this (generalist.train.preflight).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from tqdm import tqdm

from generalist import distributed as dist
from generalist.catalog.mixture import Mixture
from generalist.errors import DataError
from generalist.train.checkpoint import (
    check_resumable,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
    set_aside_for_fresh_start,
    set_rng_state,
)
from generalist.train.config import TrainConfig
from generalist.train.periodic_eval import periodic_evaluation
from generalist.train.resume import accept_changes, open_run_log
from generalist.train.run_lock import hold_output_dir
from generalist.train.setup import setup_backends, setup_data, setup_engine, setup_model
from generalist.train.step import LossMeter, data_metrics, train_window
from generalist.train.stops import NonFiniteLoss, StepChecks
from generalist.verbosity import quiet_libraries


def train(cfg: TrainConfig, mixture: Mixture) -> dict[str, float]:
    """Run training to `cfg.steps`; returns the last logged metrics (rank 0; {} elsewhere)."""
    ckpt_root = cfg.output_dir / "checkpoints"
    resume_from = resolve_resume(cfg.resume, ckpt_root, say=os.environ.get("RANK", "0") == "0")
    if resume_from is not None:
        check_resumable(resume_from, cfg.model_dump(mode="json"))
    quiet_libraries(cfg.logging.verbose)
    device = dist.init_distributed()
    checks = StepChecks(cfg.optim.nonfinite, cfg.optim.max_nonfinite_in_a_row, device)
    hold_output_dir(cfg.output_dir)  # collective: one run per output_dir, shared by its ranks
    if cfg.resume is None:
        set_aside_for_fresh_start(ckpt_root)
    quiet_libraries(cfg.logging.verbose)  # again: deepspeed's loggers exist only once imported
    precision = dist.auto_precision(cfg.precision)
    setup_backends(cfg, device)
    bundle = setup_model(cfg, mixture)
    engine = setup_engine(cfg, bundle.model, precision)
    step, position, rng = 0, None, None
    if resume_from is not None:
        step, position, rng = load_checkpoint(resume_from, engine)
        accept_changes(cfg, resume_from, step, engine, main=dist.is_main())
    stream, batches = setup_data(cfg, mixture, bundle, position)
    tracker = open_run_log(cfg, step) if dist.is_main() else None
    meter = LossMeter([name for name, _ in mixture.tasks], device)
    if rng is not None:
        set_rng_state(rng)  # last, so nothing in setup draws from the restored streams
    else:
        torch.manual_seed(cfg.seed + 1 + dist.rank())  # dropout masks differ across ranks
    if dist.is_main():
        where = f"resuming from {resume_from}" if resume_from else "starting"
        print(f"generalist train: {where} at step {step} of {cfg.steps}; out: {cfg.output_dir}")
    engine.train()
    metrics: dict[str, float] = {}
    eval_cache: dict[str, Any] = {}
    bar = tqdm(total=cfg.steps, initial=step, desc="train", unit="step", disable=not dist.is_main())
    while step < cfg.steps:
        # the whole accumulation window first: its target tokens normalise every micro-batch's
        # loss; the data position saved is the window's last (all of it is used this step)
        try:
            window = [next(batches) for _ in range(cfg.batch.grad_accum)]
        except DataError:
            bar.close()  # a bad sample's line (shard, key) starts a line of its own
            raise
        meter_before, skipped_before = meter.totals.clone(), engine.skipped_steps
        train_window(engine, window, cfg.batch.loss_normalization, device, precision, meter)
        position = window[-1].position
        step += 1
        try:
            stop = checks.after_step(step, engine, window, meter, meter_before, skipped_before)
        except NonFiniteLoss:
            bar.close()  # the error's line starts a line of its own
            raise
        if checks.skipped_step and not stop and step < cfg.steps:
            continue  # optim.nonfinite=skip: a skipped step is neither logged nor saved
        bar.update(1)
        if step % cfg.logging.every == 0 or step == cfg.steps:
            metrics = meter.summary(engine.get_lr()[0])  # collective: every rank calls it
            metrics.update(data_metrics(stream, cfg.skip_bad, device))  # collective too
            if tracker is not None:
                tracker.log_metrics(metrics, step=step)
            tokens = f"{metrics['train/tokens_per_s']:.0f}"
            bar.set_postfix(loss=f"{metrics['train/loss']:.4f}", tokens_per_s=tokens)
        if cfg.eval.every and not stop and (step % cfg.eval.every == 0 or step == cfg.steps):
            # collective (ZeRO-3 forwards): every rank calls it; rank 0 logs eval/<task>/...
            periodic_evaluation(cfg, bundle, engine.module, step, tracker, eval_cache, engine)
            meter.restart_clock()
        if stop or step == cfg.steps or (cfg.checkpoint.every and step % cfg.checkpoint.every == 0):
            config = cfg.model_dump(mode="json")
            save_checkpoint(ckpt_root, step, engine, bundle, position, config, cfg.checkpoint.keep)
            meter.restart_clock()  # tokens/s measures training, not saving
        if stop:
            bar.close()
            if tracker is not None:
                tracker.close()
            raise checks.preempted(step, ckpt_root / f"step-{step:06d}")
    bar.close()
    if tracker is not None:
        tracker.close()
    dist.barrier()
    return metrics if dist.is_main() else {}
