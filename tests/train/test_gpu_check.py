"""`bash launch/gpu_check.sh --dry-run`: the prepared GPU check's steps on CPU with a tiny
Qwen2-VL, through the same script, package layout and code path the lent GPU machine runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow  # trains (a few seconds a run; about 10-40 s in all on 2 cores)


def test_gpu_check_dry_run_prints_and_writes_its_record(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2", "TMPDIR": str(tmp_path)}
    env.pop("OUT", None)
    proc = subprocess.run(
        ["bash", str(ROOT / "launch" / "gpu_check.sh"), "--dry-run", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, (proc.stdout[-3000:], proc.stderr[-3000:])
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    record = json.loads(lines[-1])
    written = list(tmp_path.glob("*-cpu-dry-run.json"))
    assert len(written) == 1 and json.loads(written[0].read_text()) == record
    assert record["dry_run"] is True and record["ok"] is True and record["gpu"] is None
    # the package copy laid out as pip installs it ran, not the repository checkout
    assert record["package"].startswith(str(tmp_path)) and record["package"].endswith("generalist")
    assert record["hidden_modules"] == ["mlflow", "webdataset", "datasets"]
    # LoRA with the vision tower frozen (the default) and gradient checkpointing on
    assert record["train"]["model"]["gradient_checkpointing"] is True and record["train"]["lora"]
    assert record["model"]["params"] > record["model"]["vision_params"] > 0
    runs = record["runs"]
    for name in ("zero2", "zero3", "eager"):
        assert runs[name]["ok"], runs[name]
        assert runs[name]["tokens_per_s"] > 0 and 0 <= runs[name]["padding_fraction"] < 0.5
    assert sorted(runs["zero2"]["losses"], key=int) == ["1", "2", "3", "4"]
    # resumed from the step-2 checkpoint: the same next losses (exact on CPU)
    assert runs["resume"]["ok"] and runs["resume"]["steps_compared"] == [3, 4]
    assert runs["resume"]["max_abs_diff"] <= 1e-6
    for step in ("3", "4"):
        assert runs["resume"]["losses"][step] == pytest.approx(runs["zero2"]["losses"][step])
    # ZeRO-3 and eager attention start from the same weights and data: the same first loss
    assert runs["zero3"]["losses"]["1"] == pytest.approx(runs["zero2"]["losses"]["1"], rel=1e-5)
    assert runs["eager"]["losses"]["1"] == pytest.approx(runs["zero2"]["losses"]["1"], rel=1e-5)
    # not available on this CPU machine: recorded with their one-line config errors
    assert "config key 'model.attn_implementation'" in runs["flash_attention_2"]["error"]
    assert "config key 'model.liger_kernel'" in runs["liger"]["error"]
    # packed rows (each example's own M-RoPE index): trains, with less padding than unpacked
    assert runs["packed"]["ok"], runs["packed"]
    assert runs["packed"]["padding_fraction"] < runs["zero2"]["padding_fraction"]
    # no flash-attn here: the varlen run is skipped with that reason
    assert "needs the flash-attn package" in runs["packed_flash_attention_2"]["error"]
    bench = record["bench"]
    assert bench["tokens_per_s"] > 0 and bench["plain_tokens_per_s"] > 0
    assert set(bench["time_split_s"]) == {"data", "forward", "backward", "optimizer"}
    assert all(v > 0 for v in bench["time_split_s"].values())
    assert 1.5 < bench["flops_factor"] < 3.0 and bench["model_tflops_per_s"] > 0
    assert "mfu" not in bench  # CUDA only
    assert record["seconds"]["total"] > 0
