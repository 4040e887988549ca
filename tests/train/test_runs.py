"""Two-rank DeepSpeed runs on CPU (gloo): ZeRO-2 and ZeRO-3 learn, kill -9 + resume follows the
uninterrupted run exactly, a ZeRO-3 run whose ranks differ in modality does not hang.

Each launch costs ~30-60 s on 2 cores, so one uninterrupted ZeRO-2 run serves both the
"learns" and the "resume matches" assertions.
"""

from __future__ import annotations

import json
import math
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from generalist.train.checkpoint import complete_checkpoints, latest_checkpoint

from support.deepspeed_runs import (
    LORA,
    TIMEOUT,
    falls,
    finish,
    launch,
    launch_two_nodes,
    losses,
    modality_mix,
)

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


def test_two_nodes_give_the_losses_of_one_node(zero2_run, tiny_config_module, tmp_path) -> None:
    """Item 5 of issue 22: the multi-node launch path (two launchers, --no_ssh, node_rank 0|1,
    master 127.0.0.1), 2 ranks as 2 nodes x 1, against the one-node 2-rank run: same global
    batch, same losses."""
    config = tiny_config_module("twonode.yaml", deepspeed=2, **LORA)
    procs = launch_two_nodes(config, tmp_path)
    for node, proc in enumerate(procs):
        try:
            rc = proc.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            for p in procs:
                os.killpg(p.pid, signal.SIGKILL)
            raise
        log = config.with_suffix(f".node{node}.log").read_text()
        assert rc == 0, log[-4000:]
    one_node, two_nodes = losses(zero2_run[1]), losses(config.with_suffix(""))
    assert sorted(two_nodes) == sorted(one_node) == list(range(1, 13))
    assert two_nodes == pytest.approx(one_node, rel=1e-5, abs=1e-6)
    meta = json.loads(
        (latest_checkpoint(config.with_suffix("") / "checkpoints") / "trainer.json").read_text()
    )
    assert meta["world_size"] == 2


def test_resume_at_another_world_size_keeps_the_global_batch(zero2_run, tiny_config_module):
    """Issue 22 item 4: the 2-rank run's step-12 checkpoint resumes on 1 rank with micro-batch
    8 (global batch 8 as before): accepted, said in one line each, and the stream continues
    the same global sequence (generation 0, position + 2 steps x 8 x group_by_length 2)."""
    import shutil

    config = tiny_config_module("elastic.yaml", deepspeed=2, steps=14, **LORA)
    config.write_text(config.read_text().replace("micro_batch_size: 4", "micro_batch_size: 8"))
    out = config.with_suffix("")
    shutil.copytree(zero2_run[1], out)
    finish(launch(config, ranks=1), config)
    log = config.with_suffix(".log").read_text()
    assert "at world size 1 (saved by 2 ranks)" in log and "moments restart" in log
    assert "batch.micro_batch_size 4 -> 8" in log
    curve, before_resume = losses(out), losses(zero2_run[1])
    assert {13, 14} <= set(curve) and all(math.isfinite(curve[s]) for s in (13, 14))
    assert curve[13] < before_resume[1]  # the trained weights went on, not a fresh model
    before = json.loads((out / "checkpoints/step-000012/data/rank-0.json").read_text())
    after = json.loads((out / "checkpoints/step-000014/data/rank-0.json").read_text())
    assert before["done"] == after["done"] == 0  # both at a window's end
    assert after["window"]["generation"] == before["window"]["generation"] == 0
    assert after["window"]["position"] == before["window"]["position"] + 2 * 8


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
