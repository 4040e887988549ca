"""Checkpoints under faults: kill -9 inside training and inside a checkpoint save, then
`resume: auto`; a full disk during a save; a checkpoint file crafted to run code on load.

Single-process `generalist train` runs (world size 1, still DeepSpeed ZeRO-2 on CPU, ~15 s each)
through tests/reliability/faulty_train.py, which slows or fails torch.save in a checkpoint's
.tmp directory. (tests/train/test_runs.py kills two-rank runs between saves only.)
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from generalist.train.checkpoint import (
    complete_checkpoints,
    is_complete,
    weights_only_load,
    write_manifest,
)

pytestmark = pytest.mark.slow
FAULTY = str(Path(__file__).with_name("faulty_train.py"))
TIMEOUT = 240


def launch(config: Path, *overrides: str, **faults: str) -> subprocess.Popen:
    """faulty_train.py CONFIG in its own session; stdout and stderr go to <config>.out/.err
    (files, not pipes: a pipe nobody reads could block the run)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **faults}
    out = open(config.with_suffix(".out"), "a")  # noqa: SIM115 - the child holds it
    err = open(config.with_suffix(".err"), "w")  # noqa: SIM115
    return subprocess.Popen(
        [sys.executable, FAULTY, str(config), *overrides],
        stdout=out,
        stderr=err,
        env=env,
        start_new_session=True,
    )


def finish(proc: subprocess.Popen, config: Path) -> str:
    """Wait for the run; its stderr."""
    try:
        proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        kill(proc)
        raise
    return config.with_suffix(".err").read_text()


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def rows(out: Path, name: str = "metrics.jsonl") -> list[dict]:
    path = out / name
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        with contextlib.suppress(json.JSONDecodeError):  # a line torn by the kill
            found.append(json.loads(line))
    return found


def last_step(out: Path) -> int:
    return max((r["step"] for r in rows(out)), default=0)


def latest(root: Path) -> Path | None:
    pointer = root / "latest"
    return root / pointer.read_text().strip() if pointer.exists() else None


def assert_loads(checkpoint: Path) -> None:
    """Every file of a complete checkpoint reads back (tensors with weights_only)."""
    assert is_complete(checkpoint), checkpoint
    meta = json.loads((checkpoint / "trainer.json").read_text())
    assert checkpoint.name == f"step-{meta['step']:06d}"
    assert json.loads((checkpoint / "data" / "rank-0.json").read_text())
    files = sorted(checkpoint.rglob("*.pt"))
    assert len(files) == 3, files  # engine model + optimizer states, RNG state
    for file in files:
        weights_only_load(file)
    adapter = checkpoint / "model" / "adapter" / "adapter_model.safetensors"
    assert load_file(adapter)


def watch(proc: subprocess.Popen, root: Path, until) -> None:
    """Poll until `until()` holds; meanwhile `latest` must always name a complete checkpoint."""
    deadline = time.time() + TIMEOUT
    while not until():
        assert proc.poll() is None, "the run ended before the kill"
        assert time.time() < deadline
        pointed = latest(root)
        assert pointed is None or is_complete(pointed), pointed
        time.sleep(0.01)


def test_kill_9_in_training_and_in_saves_then_resume(make_config, disk_full_run) -> None:
    config = make_config("killed.yaml")
    out = config.with_suffix("")
    root = out / "checkpoints"
    rng = random.Random()
    # 1. kill inside a save (step 4, 6 or 8), at a random moment of its ~1.2 s of torch.saves
    save_step = rng.choice([4, 6, 8])
    proc = launch(config, RELIABILITY_SLOW_SAVE="0.4")
    watch(proc, root, lambda: (root / f"step-{save_step:06d}.tmp").exists())
    time.sleep(rng.uniform(0.0, 1.3))
    kill(proc)
    first = latest(root)
    assert first is not None
    assert first.name in (f"step-{save_step - 2:06d}", f"step-{save_step:06d}")
    for checkpoint in complete_checkpoints(root):
        assert_loads(checkpoint)
    # 2. resume, kill at a random training step past the checkpoint it resumed from
    resumed_at = int(first.name.split("-")[1])
    kill_at = rng.choice(range(resumed_at + 1, 12, 2))  # odd: between two saves
    before = len(rows(out))
    proc = launch(config)
    watch(proc, root, lambda: len(rows(out)) > before and last_step(out) >= kill_at)
    kill(proc)
    for checkpoint in complete_checkpoints(root):
        assert_loads(checkpoint)
    # 3. resume to the end
    proc = launch(config)
    err = finish(proc, config)
    assert proc.returncode == 0, err[-3000:]
    assert [row["step"] for row in rows(out)] == list(range(1, 13))  # one run: each step once
    by_step = {row["step"]: [row["train/loss"]] for row in rows(out)}
    # steps logged by a killed run and again after its resume: set aside, the same losses
    aside = [row for row in rows(out, "metrics.set_aside.jsonl") if "torn" not in row]
    assert aside, (save_step, kill_at)
    for row in aside:
        assert abs(row["train/loss"] - by_step[row["step"]][0]) <= 1e-6, (row, save_step, kill_at)
    # ... and the same as a run never killed (the disk-full run: the same steps 1-6)
    reference = {row["step"]: row["train/loss"] for row in rows(disk_full_run[0].with_suffix(""))}
    assert sorted(reference) == list(range(1, 7))
    for step, loss in reference.items():
        assert by_step[step][-1] == pytest.approx(loss, abs=1e-6), (step, save_step, kill_at)
    assert latest(root) == root / "step-000012"
    assert not list(root.glob("*.tmp"))
    # each kill -9 left the run's output_dir lock behind: the next start took it over, saying so
    taken = config.with_suffix(".out").read_text().count("took over the stale lock")
    assert taken == 2, config.with_suffix(".out").read_text()[-2000:]
    assert not (out / "run.lock").exists()
    for checkpoint in complete_checkpoints(root):
        assert_loads(checkpoint)


@pytest.fixture(scope="module")
def disk_full_run(
    shard_root, config_dict, tmp_path_factory
) -> tuple[Path, subprocess.CompletedProcess]:
    """A run whose disk is full when it saves step 6: uninterrupted up to there. Its MLflow
    server is down for the whole run (nothing listens on the port)."""
    config = tmp_path_factory.mktemp("full") / "full.yaml"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        down = f"http://127.0.0.1:{sock.getsockname()[1]}"
    mlflow = {"logging.mlflow": True, "logging.tracking_uri": down}
    cfg = config_dict(shard_root, config.with_suffix(""), steps=8, **mlflow)
    config.write_text(yaml.safe_dump(cfg))
    proc = launch(config, RELIABILITY_DISK_FULL="6")
    err = finish(proc, config)
    return config, subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(disk_full_run) -> None:
    config, result = disk_full_run
    root = config.with_suffix("") / "checkpoints"
    assert result.stderr.count("is unreachable") == 1  # MLflow down: one warning, training goes on
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    message = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(message) == 1 and "disk full" in message[0], result.stderr[-2000:]
    assert "step-000006" in message[0] and "step-000004" in message[0]
    assert latest(root) == root / "step-000004"
    assert sorted(p.name for p in root.iterdir()) == ["latest", "step-000002", "step-000004"]
    assert_loads(root / "step-000004")
    # a crafted checkpoint file that runs code when unpickled is refused on resume
    marker = config.parent / "pwned"
    engine = root / "step-000004" / "engine"
    (optim,) = engine.glob("*optim_states.pt")
    optim.write_bytes(_pickle_that_runs(f"touch {marker}"))
    write_manifest(root / "step-000004")  # whoever can write the file can write its manifest
    result = subprocess.run(
        [sys.executable, FAULTY, str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=TIMEOUT,
    )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "could run code" in result.stderr and str(optim) in result.stderr
    assert not marker.exists()


def test_training_logged_while_mlflow_was_down_is_synced(disk_full_run, mlflow_server, cli):
    out = disk_full_run[0].with_suffix("")
    assert [row["step"] for row in rows(out)] == list(range(1, 7))
    result = cli("sync", str(out), "--tracking-uri", mlflow_server)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "6 new metric line(s) of 6" in result.stdout
    from mlflow import MlflowClient

    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    client = MlflowClient(mlflow_server)
    losses = [(m.step, m.value) for m in client.get_metric_history(run_id, "train/loss")]
    assert sorted(losses) == [(row["step"], row["train/loss"]) for row in rows(out)]
    assert client.get_run(run_id).data.params["steps"] == "8"


def _pickle_that_runs(command: str) -> bytes:
    import io

    import torch

    class Payload:
        def __reduce__(self):
            return (os.system, (command,))

    buffer = io.BytesIO()
    torch.save({"optimizer_state_dict": Payload()}, buffer)
    return buffer.getvalue()
