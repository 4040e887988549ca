"""Starting a run again, as users do: a finished run says so at once (no torch, DeepSpeed or
model loaded); a resume with a changed learning rate says what changed, the new rate is the one
used, and MLflow takes the params (the first start's, then `resume.<step>.<key>`) without
refusing any. (The pieces, in-process: tests/train/test_resume.py.)"""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient

from generalist.tracking.run_records import read_metrics

pytestmark = pytest.mark.slow


def test_finished_run_then_a_changed_learning_rate(make_config, cli, tmp_path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow = {"logging.mlflow": True, "logging.tracking_uri": uri}
    config = make_config("run.yaml", steps=4, **mlflow)
    out = config.with_suffix("")
    first = cli("train", str(config))
    assert first.returncode == 0, first.stderr[-3000:]
    again = cli("train", str(config))
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.strip() == (
        f"generalist train: nothing to do: {out} finished at step 4 (checkpoint "
        f"{out / 'checkpoints' / 'step-000004'}) and steps is 4; raise steps to train on, or "
        f"start afresh with resume=none or a new output_dir"
    )
    assert "real_accelerator" not in again.stderr  # DeepSpeed was never imported
    resumed = cli("train", str(config), "steps=6", "optim.lr=5e-3")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    notice = [line for line in resumed.stdout.splitlines() if "changed config" in line]
    assert notice == [
        f"generalist train: resuming from {out / 'checkpoints' / 'step-000004'} with a changed "
        f"config, accepted: optim.lr 0.01 -> 0.005, steps 4 -> 6 (in effect from step 5; "
        f"logged to MLflow as resume.4.<key>)"
    ]
    lrs = [(row["step"], row["train/lr"]) for row in read_metrics(out)]
    assert lrs == [(1, 0.01), (2, 0.01), (3, 0.01), (4, 0.01), (5, 0.005), (6, 0.005)]
    client = MlflowClient(uri)
    run_id = json.loads((out / "mlflow_run.json").read_text())["run_id"]
    history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/lr"))
    assert history == lrs
    params = client.get_run(run_id).data.params
    assert params["optim.lr"] == "0.01" and params["steps"] == "4"  # the first start's
    assert params["resume.4.optim.lr"] == "0.005" and params["resume.4.steps"] == "6"
    assert json.loads((out / "params.json").read_text()) == params  # local copy: the same
