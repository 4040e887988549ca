"""Starting a run again (generalist.train.resume): what changed and is accepted, the optimizer
keys made to hold over the checkpoint's optimizer state, params MLflow never refuses, a
finished run. (Real resumed runs: tests/reliability/test_resume_changes.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import get_scheduler

from generalist.train.checkpoint import write_manifest
from generalist.train.config import load_config
from generalist.train.resume import (
    apply_optim_changes,
    change_notice,
    config_changes,
    finished,
    params_to_log,
)


def _checkpoint(root: Path, step: int, config: dict) -> Path:
    path = root / "checkpoints" / f"step-{step:06d}"
    path.mkdir(parents=True)
    meta = {"step": step, "world_size": 1, "config": config}
    (path / "trainer.json").write_text(json.dumps(meta))
    write_manifest(path)  # written last: the checkpoint is complete
    (root / "checkpoints" / "latest").write_text(path.name + "\n")
    return path


def test_changes_are_listed_and_refused_keys_left_out(tiny_config, tmp_path) -> None:
    cfg = load_config(tiny_config())
    ckpt = _checkpoint(tmp_path, 4, cfg.model_dump(mode="json"))
    now = load_config(tiny_config(), ["optim.lr=5e-3", "steps=40", "resume=auto"])
    changes = config_changes(ckpt, now.model_dump(mode="json"))
    assert changes == [("optim.lr", 3e-3, 5e-3), ("steps", 12, 40)]
    notice = change_notice(ckpt, 4, changes)
    assert "with a changed config, accepted: optim.lr 0.003 -> 0.005, steps 12 -> 40" in notice
    assert "from step 5" in notice and "\n" not in notice
    # model keys are refused by check_resumable before; they are never "accepted" here
    model = load_config(tiny_config(), ["model.tiny.hidden_size=64"]).model_dump(mode="json")
    assert config_changes(ckpt, model) == []


def test_finished_run_says_so(tiny_config, tmp_path) -> None:
    cfg = load_config(tiny_config(), [f"output_dir={tmp_path / 'run'}"])
    assert finished(cfg) is None  # nothing to resume
    _checkpoint(tmp_path / "run", 12, cfg.model_dump(mode="json"))
    line = finished(cfg)
    assert line.startswith(f"generalist train: nothing to do: {tmp_path / 'run'} finished at step")
    assert "raise steps" in line
    out = f"output_dir={tmp_path / 'run'}"
    assert "at step 12 (checkpoint" in finished(load_config(tiny_config(), [out, "steps=10"]))
    assert finished(load_config(tiny_config(), [out, "steps=13"])) is None  # more to train


def _engine(cfg, model: torch.nn.Module) -> SimpleNamespace:
    """The optimizer and schedule of generalist.train.setup (decayed matrices first)."""
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    vectors = [p for p in model.parameters() if p.ndim < 2]
    groups = [
        {"params": matrices, "weight_decay": cfg.optim.weight_decay},
        {"params": vectors, "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas)
    name = {"constant": "constant_with_warmup"}.get(cfg.optim.decay, cfg.optim.decay)
    scheduler = get_scheduler(name, optimizer, cfg.optim.warmup_steps, cfg.steps)
    return SimpleNamespace(module=model, optimizer=optimizer, lr_scheduler=scheduler)


@pytest.mark.parametrize("decay", ["constant", "cosine"])
def test_optim_changes_hold_over_the_checkpoint_state(tiny_config, decay) -> None:
    old = load_config(tiny_config(), [f"optim.decay={decay}", "optim.weight_decay=0.1"])
    model = torch.nn.Linear(4, 3)
    engine = _engine(old, model)
    for _ in range(5):
        engine.optimizer.step()
        engine.lr_scheduler.step()
    saved = (engine.optimizer.state_dict(), engine.lr_scheduler.state_dict())
    changes = ["optim.lr=1e-3", "optim.betas=[0.8, 0.95]", "steps=40", "optim.weight_decay=0.01"]
    new = load_config(tiny_config(), [f"optim.decay={decay}", *changes])
    resumed = _engine(new, model)
    resumed.optimizer.load_state_dict(saved[0])  # what DeepSpeed's load_checkpoint does
    resumed.lr_scheduler.load_state_dict(saved[1])
    groups = resumed.optimizer.param_groups
    assert groups[0]["lr"] != pytest.approx(expected_lr(new, 5))  # the old values came back
    apply_optim_changes(resumed, new, old.model_dump(mode="json")["optim"])
    assert [g["lr"] for g in groups] == pytest.approx([expected_lr(new, 5)] * 2)
    assert [g["betas"] for g in groups] == [(0.8, 0.95)] * 2
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]  # matrices only
    resumed.optimizer.step()
    resumed.lr_scheduler.step()
    assert groups[0]["lr"] == pytest.approx(expected_lr(new, 6))


def expected_lr(cfg, step: int) -> float:
    """The lr of a fresh schedule of `cfg` after `step` steps."""
    engine = _engine(cfg, torch.nn.Linear(2, 2))
    for _ in range(step):
        engine.optimizer.step()
        engine.lr_scheduler.step()
    return engine.optimizer.param_groups[0]["lr"]


def test_params_mlflow_never_refuses() -> None:
    first = {"optim.lr": "0.01", "steps": "12", "seed": "0"}
    assert params_to_log(first, {}, 0) == first  # the first start: everything
    logged = dict(first)
    assert params_to_log(first, logged, 4) == {}  # resumed unchanged: nothing new
    changed = {**first, "optim.lr": "0.005", "steps": "40"}
    new = params_to_log(changed, logged, 4)
    assert new == {"resume.4.optim.lr": "0.005", "resume.4.steps": "40"}
    logged.update(new)
    assert params_to_log(changed, logged, 8) == {}  # the same again later: already said
    again = params_to_log({**changed, "optim.lr": "0.002"}, logged, 8)
    assert again == {"resume.8.optim.lr": "0.002"}
    logged.update(again)
    # resumed from step 4 once more with yet another value: a key not taken yet
    third = params_to_log({**changed, "optim.lr": "0.001"}, logged, 4)
    assert third == {"resume.4-2.optim.lr": "0.001"}
    assert not set(third) & set(logged)


def test_a_fresh_start_in_a_used_run_dir_is_a_new_run(tiny_config, tmp_path) -> None:
    """Step 0 (resume=none, or no checkpoint yet): the previous run's records move aside and a
    new MLflow run is made, so its params and steps never mix with the new one's."""
    from mlflow import MlflowClient

    from generalist.train.resume import open_run_log

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    base = [f"output_dir={tmp_path / 'run'}", "logging.mlflow=true", f"logging.tracking_uri={uri}"]
    old = open_run_log(load_config(tiny_config(), base), 0)
    old.log_metrics({"train/loss": 5.0}, 1)
    old.close()
    new = open_run_log(load_config(tiny_config(), [*base, "optim.lr=0.5", "resume=none"]), 0)
    new.log_metrics({"train/loss": 1.0}, 1)
    new.close()
    assert new.run_id != old.run_id
    (previous,) = (tmp_path / "run").glob("previous-*")
    assert json.loads((previous / "metrics.jsonl").read_text())["train/loss"] == 5.0
    assert json.loads((previous / "params.json").read_text())["optim.lr"] == "0.003"
    client = MlflowClient(uri)
    assert client.get_run(new.run_id).data.params["optim.lr"] == "0.5"
    assert [m.value for m in client.get_metric_history(new.run_id, "train/loss")] == [1.0]
    assert [m.value for m in client.get_metric_history(old.run_id, "train/loss")] == [5.0]
