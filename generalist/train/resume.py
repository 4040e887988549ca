"""Starting a run again: what changed since its checkpoint, a finished run, the records.

- `finished(cfg)`: a run whose latest checkpoint is at `steps` (or later) says so at once, before
  torch, deepspeed or the model are loaded (generalist.cli.train).
- `config_changes(ckpt, config)`: every key that differs from the checkpoint's config. The keys
  of checkpoint.RESUME_KEYS are refused before this (check_resumable); any other change is
  accepted and said in one line. `apply_optim_changes` makes the optimizer keys hold: the
  checkpoint's optimizer and scheduler state would otherwise bring back the old lr, betas and
  weight decay (warmup, decay and steps shape the new schedule from the restored step on).
- `open_run_log(cfg, step)`: rank 0's tracker (metrics.jsonl always; MLflow unless
  logging.mlflow is false) on a run dir whose records read as one run: a run starting at step 0
  is a new run (a previous one's records move to previous-<time>/, MLflow gets a new run); the
  lines an interrupted process logged after `step` are set aside (generalist.tracking.delivery),
  and params are logged so MLflow never refuses them: every key once, at the first start; a
  later value as a new key `resume.<step>.<key>`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generalist.redact import redact_json
from generalist.tracking.delivery import SET_ASIDE, move_previous, rewind
from generalist.tracking.mlflow_calls import flatten_params
from generalist.tracking.tracker import Tracker
from generalist.train.checkpoint import RESUME_KEYS, check_resumable, resolve_resume
from generalist.train.config import TrainConfig

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine


def checkpoint_step(ckpt: Path) -> int:
    """The step of a complete checkpoint (its trainer.json)."""
    return int(json.loads((ckpt / "trainer.json").read_text())["step"])


def finished(cfg: TrainConfig) -> str | None:
    """The line to print when the run to resume is already at `steps`; None otherwise."""
    ckpt = resolve_resume(cfg.resume, cfg.output_dir / "checkpoints")
    if ckpt is None:
        return None
    check_resumable(ckpt, cfg.model_dump(mode="json"))
    step = checkpoint_step(ckpt)
    if step < cfg.steps:
        return None
    return (
        f"generalist train: nothing to do: {cfg.output_dir} finished at step {step} (checkpoint "
        f"{ckpt}) and steps is {cfg.steps}; raise steps to train on, or start afresh with "
        f"resume=none or a new output_dir"
    )


def _flat(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping) and value:
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def config_changes(ckpt: Path, config: Mapping[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, checkpoint's value, this run's value) for every accepted change."""
    saved = _flat(json.loads((ckpt / "trainer.json").read_text())["config"])
    now = _flat(redact_json(json.loads(json.dumps(dict(config), default=str))))  # type: ignore[arg-type]
    refused = (*RESUME_KEYS, "resume")  # RESUME_KEYS: refused before (check_resumable)
    return [
        (key, saved.get(key), now.get(key))
        for key in sorted(set(saved) | set(now))
        if saved.get(key) != now.get(key)
        and not any(key == r or key.startswith(f"{r}.") for r in refused)
    ]


def change_notice(ckpt: Path, step: int, changes: list[tuple[str, Any, Any]]) -> str:
    """One line: what changed since the checkpoint, and that it is accepted."""
    listed = ", ".join(f"{k} {json.dumps(old)} -> {json.dumps(new)}" for k, old, new in changes)
    return (
        f"generalist train: resuming from {ckpt} with a changed config, accepted: {listed} "
        f"(in effect from step {step + 1}; logged to MLflow as resume.{step}.<key>)"
    )


def apply_optim_changes(
    engine: DeepSpeedEngine, cfg: TrainConfig, saved: Mapping[str, Any]
) -> None:
    """Put this config's lr, betas and weight decay into the restored optimizer and scheduler,
    and the lr of the new schedule at the restored step (saved: the checkpoint's `optim`)."""
    scheduler = engine.lr_scheduler
    groups = scheduler.optimizer.param_groups
    new = cfg.optim
    if hasattr(scheduler, "lr_lambdas"):  # LambdaLR: every transformers schedule
        scheduler.base_lrs = [new.lr] * len(groups)
        lrs = [new.lr * fn(scheduler.last_epoch) for fn in scheduler.lr_lambdas]
    else:
        lrs = [g["lr"] * new.lr / float(saved.get("lr", new.lr)) for g in groups]
    old_decay = float(saved.get("weight_decay", 0.0))
    if old_decay:
        decayed = [g for g in groups if g["weight_decay"] == old_decay]
    else:  # both groups at 0: the first is the matrices' one (generalist.train.setup)
        trainable = [p for p in engine.module.parameters() if p.requires_grad]
        shapes = [getattr(p, "ds_shape", p.shape) for p in trainable]  # ZeRO-3: ds_shape
        decayed = groups[:1] if any(len(s) >= 2 for s in shapes) else []
    for group, lr in zip(groups, lrs):
        group.update(lr=lr, initial_lr=new.lr, betas=tuple(new.betas))
        if any(group is d for d in decayed):
            group["weight_decay"] = new.weight_decay
    scheduler._last_lr = lrs


SCHEDULE_KEYS = ("optim.lr", "optim.warmup_steps", "optim.decay", "optim.betas",
                 "optim.weight_decay", "steps")  # fmt: skip


def accept_changes(
    cfg: TrainConfig, ckpt: Path, step: int, engine: DeepSpeedEngine, main: bool
) -> None:
    """After load_checkpoint: say what changed since `ckpt` (on the main rank) and make the
    optimizer and schedule keys hold (every rank)."""
    changes = config_changes(ckpt, cfg.model_dump(mode="json"))
    if any(key in SCHEDULE_KEYS for key, _, _ in changes):
        saved = json.loads((ckpt / "trainer.json").read_text())["config"].get("optim", {})
        apply_optim_changes(engine, cfg, saved)
    if changes and main:
        print(change_notice(ckpt, step, changes), flush=True)


def _latest(logged: Mapping[str, str], key: str) -> str | None:
    """The value last logged for `key`: its newest resume.<step>[-n].<key>, else `key`."""
    pattern = re.compile(rf"resume\.(\d+)(?:-(\d+))?\.{re.escape(key)}")
    found = [
        (int(m[1]), int(m[2] or 1), v) for k, v in logged.items() if (m := pattern.fullmatch(k))
    ]
    return max(found)[2] if found else logged.get(key)


def params_to_log(flat: Mapping[str, str], logged: Mapping[str, str], step: int) -> dict[str, str]:
    """Params MLflow can take on top of those `logged` before: new keys as they are, changed
    values under a new key resume.<step>.<key> (resume.<step>-<n>.<key> once that is taken)."""
    out: dict[str, str] = {}
    for key, value in flat.items():
        if key not in logged:
            out[key] = value
        elif _latest(logged, key) != value:
            name, n = f"resume.{step}.{key}", 1
            while name in logged and logged[name] != value:
                n += 1
                name = f"resume.{step}-{n}.{key}"
            out[name] = value
    return out


def open_run_log(cfg: TrainConfig, step: int) -> Tracker:
    """Rank 0's tracker at `step` (0: a fresh start): set aside what was logged after `step`,
    then log the params MLflow does not have."""
    out = cfg.output_dir
    if step == 0 and out.is_dir():  # a new run (no checkpoint to resume): a new MLflow run too
        previous = move_previous(out)
        if previous is not None:
            print(f"generalist train: starting afresh; the previous run's records: {previous}")
    aside = rewind(out, step) if out.is_dir() else 0
    if aside:
        print(
            f"generalist train: {aside} metric line(s) logged after step {step} by the "
            f"interrupted run set aside in {out / SET_ASIDE}"
        )
    tracker = Tracker(
        out,
        tracking_uri=cfg.logging.tracking_uri,
        experiment=cfg.logging.experiment,
        run_name=cfg.logging.run_name or out.name,
        mlflow=cfg.logging.mlflow,
        kind="training",
    )
    path = out / "params.json"
    logged = json.loads(path.read_text()) if path.exists() else {}
    new = params_to_log(flatten_params(cfg.model_dump(mode="json")), logged, step)
    if new:
        tracker.log_params(new)
    return tracker
