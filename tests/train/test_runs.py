"""Two-rank DeepSpeed runs on CPU (gloo): ZeRO-2 and ZeRO-3 learn, kill -9 + resume follows the
uninterrupted run exactly, a ZeRO-3 run whose ranks differ in modality does not hang.

Each launch costs ~30-60 s on 2 cores, so one uninterrupted ZeRO-2 run serves both the
"learns" and the "resume matches" assertions.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch

from generalist.train.checkpoint_layout import complete_checkpoints, latest_checkpoint

from support.deepspeed_runs import LORA, TIMEOUT, falls, finish, launch, losses, modality_mix

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zero2_run(tiny_config_module) -> tuple[Path, Path]:
    config = tiny_config_module("zero2.yaml", deepspeed=2, **LORA)
    finish(launch(config), config)
    return config, config.with_suffix("")


def test_zero2_two_ranks_learn_and_checkpoint(zero2_run) -> None:
    _, out = zero2_run
    curve = losses(out)
    assert sorted(curve) == list(range(1, 13))
    assert falls(curve), curve
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    last = rows[-1]
    for task in ("train_colors", "train_words"):
        assert last[f"train/{task}/loss"] > 0
        assert 0.2 < last[f"data/{task}/realized_rate"] < 0.8
    assert last["train/tokens_per_s"] > 0 and 0 <= last["train/padding_fraction"] < 0.5
    assert last["train/lr"] == pytest.approx(1e-2)
    root = out / "checkpoints"
    assert [p.name for p in complete_checkpoints(root)] == ["step-000008", "step-000012"]  # keep 2
    assert latest_checkpoint(root) == root / "step-000012"
    step = root / "step-000012"
    assert json.loads((step / "trainer.json").read_text())["world_size"] == 2
    assert (step / "model" / "model.json").is_file() and (step / "engine").is_dir()
    assert sorted(p.name for p in (step / "data").iterdir()) == ["rank-0.json", "rank-1.json"]


def test_kill_9_then_resume_matches_uninterrupted_run(zero2_run, tiny_config_module) -> None:
    reference = losses(zero2_run[1])
    # The same run, only longer (a constant lr does not depend on `steps`), so it is still
    # training when the kill lands; it resumes with steps=12 to compare with the reference.
    # It logs to MLflow (a local sqlite file), which must get every step once.
    uri = f"sqlite:///{zero2_run[0].parent / 'killed_mlflow.db'}"
    mlflow = {"logging.mlflow": True, "logging.tracking_uri": uri}
    config = tiny_config_module("killed.yaml", deepspeed=2, steps=40, **LORA, **mlflow)
    out = config.with_suffix("")
    kill_after = random.Random().randint(5, 9)  # past the first checkpoint (step 4)
    proc = launch(config)
    deadline = time.time() + TIMEOUT
    while time.time() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").exists() and max(losses(out), default=0) >= kill_after:
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = max(losses(out))
    saved = latest_checkpoint(out / "checkpoints")
    assert saved is not None and saved.name in ("step-000004", "step-000008"), killed_at
    saved_step = int(saved.name.split("-")[1])
    finish(launch(config, "steps=12"), config)  # resume: auto
    log = config.with_suffix(".log").read_text()
    assert f"resuming from {saved}" in log
    assert "with a changed config, accepted: steps 40 -> 12" in log
    resumed = losses(out)
    assert sorted(resumed) == list(range(1, 13)), (killed_at, resumed)
    for step in range(1, 13):
        assert resumed[step] == pytest.approx(reference[step], abs=1e-6), (step, killed_at)
    # the log reads as one run: each step once; the killed run's later steps set aside
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 13)), (saved_step, killed_at, steps)
    aside_file = out / "metrics.set_aside.jsonl"  # none when killed right after a save
    lines = aside_file.read_text().splitlines() if aside_file.exists() else []
    aside = [json.loads(line) for line in lines]
    assert [r.get("step") for r in aside if "torn" not in r] == list(
        range(saved_step + 1, killed_at + 1)
    )
    for row in aside:  # the same losses as the uninterrupted run
        if "torn" not in row:
            assert row["train/loss"] == pytest.approx(reference[row["step"]], abs=1e-6), row
    from mlflow import MlflowClient

    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    history = MlflowClient(uri).get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == list(range(1, 13)), (saved_step, killed_at)
    for metric in history:
        assert metric.value == pytest.approx(reference[metric.step], abs=1e-6), metric


def test_zero3_lora_mixed_modality_ranks_learn(tiny_config_module) -> None:
    """ZeRO-3 with LoRA; no length grouping, so micro-batches mix image and text-only examples
    and at some steps one rank has only text: the collator's dummy image keeps ranks in step."""
    config = tiny_config_module(
        "zero3.yaml",
        deepspeed=3,
        schedule="iid",  # stratified (the default) would mix every micro-batch
        **{**LORA, "batch.group_by_length": 0, "steps": 12},
    )
    assert modality_mix(config)  # the scenario really happens in this run's batches
    finish(launch(config), config)
    out = config.with_suffix("")
    curve = losses(out)
    assert sorted(curve) == list(range(1, 13)) and falls(curve), curve
    model_dir = out / "checkpoints" / "step-000012" / "model"
    assert (model_dir / "adapter" / "adapter_model.safetensors").stat().st_size > 0
    from safetensors.torch import load_file

    adapter = load_file(model_dir / "adapter" / "adapter_model.safetensors")
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert lora_b and all(v.numel() > 0 for v in lora_b)  # gathered, not ZeRO-3 placeholders
    assert any(float(v.abs().sum()) > 0 for v in lora_b)
    # ... and equal to the trained weights in the engine's partitioned ZeRO-3 state
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    engine = get_fp32_state_dict_from_zero_checkpoint(
        str(model_dir.parent), tag="engine", exclude_frozen_parameters=True
    )
    engine = {
        k.replace(".modules_to_save.default", "").replace(".default", ""): v
        for k, v in engine.items()
    }
    assert sorted(engine) == sorted(adapter)
    for key, value in adapter.items():
        assert torch.equal(value, engine[key]), key


def test_bf16_two_ranks_learn_and_save_bf16_weights(tiny_config_module) -> None:
    """precision: bf16 (what `auto` picks on a GPU) through DeepSpeed's bf16 engine; CPU ranks
    run it too, so the bf16 path is tested without a GPU."""
    config = tiny_config_module("bf16.yaml", deepspeed=2, precision="bf16")
    finish(launch(config), config)
    out = config.with_suffix("")
    curve = losses(out)
    assert sorted(curve) == list(range(1, 13)) and falls(curve), curve
    from safetensors import safe_open

    base = out / "checkpoints" / "step-000012" / "model" / "base" / "model.safetensors"
    with safe_open(str(base), "pt") as weights:
        dtypes = {weights.get_tensor(k).dtype for k in weights.keys()}  # noqa: SIM118
    assert dtypes == {torch.bfloat16}
