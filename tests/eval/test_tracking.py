"""Tracker: local sqlite default, a real mlflow server, and a server that goes away and back."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
from mlflow import MlflowClient

from generalist.tracking.mlflow_calls import MAX_VALUE, flatten_params
from generalist.tracking.run_records import read_metrics
from generalist.tracking.tracker import Tracker


def _nested_params() -> dict:
    return {
        "model": {"lora": {"r": 8, "alpha": 16}, "name": "tiny"},
        "long": "x" * (MAX_VALUE + 500),
        "many": {f"p{i}": i for i in range(150)},  # > 100 params: more than one batch
        "list": [1, 2],
        "bad key!": "ok",
    }


def test_flatten_params_within_mlflow_limits() -> None:
    flat = flatten_params(_nested_params())
    assert flat["model.lora.r"] == "8"
    assert flat["list"] == "[1, 2]"
    assert len(flat["long"]) == MAX_VALUE
    assert flat["bad key_"] == "ok"
    assert len(flat) == 3 + 1 + 150 + 1 + 1


def _exercise(tracker: Tracker, tmp_path: Path) -> None:
    tracker.log_params(_nested_params())
    for step in range(3):
        tracker.log_metrics({"train/loss": 1.0 / (step + 1), "eval/t/auc": float("nan")}, step)
    config = tmp_path / "config.yaml"
    config.write_text("steps: 3\n")
    tracker.log_artifact(config)
    tracker.log_table("predictions/t/step-2", [{"id": "a", "score": 0.5}, {"id": "b", "score": 1}])
    tracker.close()


def _check_run(uri: str, run_id: str) -> None:
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert len(run.data.params["long"]) == MAX_VALUE
    assert run.data.params["model.lora.alpha"] == "16"
    assert len(run.data.params) == 156
    history = client.get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(0, 1.0), (1, 0.5), (2, 1 / 3)]
    assert "eval/t/auc" not in run.data.metrics  # NaN stays out of MLflow
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "tables"} <= names
    # MlflowClient.load_table searches runs through the fluent (global) URI: read the file.
    local = client.download_artifacts(run_id, "tables/predictions/t/step-2.json")
    table = json.loads(Path(local).read_text())
    assert table["columns"] == ["id", "score"]
    assert [row[0] for row in table["data"]] == ["a", "b"]


def test_local_sqlite_default_and_metrics_jsonl(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    tracker = Tracker(tmp_path / "run", tracking_uri=uri, experiment="local")
    _exercise(tracker, tmp_path)
    _check_run(uri, tracker.run_id)
    lines = read_metrics(tmp_path / "run")
    assert [line["step"] for line in lines] == [0, 1, 2]
    assert lines[1]["train/loss"] == 0.5 and lines[1]["eval/t/auc"] is None
    rows = (tmp_path / "run" / "tables" / "predictions" / "t" / "step-2.jsonl").read_text()
    assert [json.loads(r)["id"] for r in rows.splitlines()] == ["a", "b"]
    # A resumed run (same run_dir, same URI) keeps logging into the same MLflow run.
    again = Tracker(tmp_path / "run", tracking_uri=uri, experiment="local")
    again.log_metrics({"train/loss": 0.25}, 3)
    again.close()
    assert again.run_id == tracker.run_id
    assert len(MlflowClient(uri).get_metric_history(tracker.run_id, "train/loss")) == 4


def test_real_mlflow_server(mlflow_server: str, tmp_path: Path) -> None:
    tracker = Tracker(tmp_path / "run", tracking_uri=mlflow_server, experiment="server")
    _exercise(tracker, tmp_path)
    _check_run(mlflow_server, tracker.run_id)


def test_server_unreachable_then_back(mlflow_proxy, mlflow_server: str, tmp_path: Path) -> None:
    mlflow_proxy.down()
    with pytest.warns(UserWarning, match="unreachable") as caught:
        tracker = Tracker(tmp_path / "run", tracking_uri=mlflow_proxy.url, retry_s=3600)
        for step in range(5):
            tracker.log_metrics({"train/loss": float(step)}, step)
    assert sum("unreachable" in str(w.message) for w in caught) == 1  # warned once
    assert tracker.run_id is None and tracker.pending == 5
    assert len(read_metrics(tmp_path / "run")) == 5  # nothing lost locally
    mlflow_proxy.up()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tracker.sync()
        tracker.close()
    history = MlflowClient(mlflow_server).get_metric_history(tracker.run_id, "train/loss")
    assert [m.value for m in history] == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_disabled_tracker_writes_nothing(tmp_path: Path) -> None:
    tracker = Tracker(tmp_path / "run", enabled=False)
    tracker.log_metrics({"a": 1.0}, 0)
    tracker.close()
    assert not (tmp_path / "run").exists()


def test_sync_creates_the_run_with_its_name_experiment_and_tags(
    mlflow_proxy, mlflow_server: str, tmp_path: Path
) -> None:
    """MLflow away for the whole run: `generalist sync` later creates the run as it was meant
    (not a run named "null" in experiment "generalist"), and the warnings say to run it."""
    from generalist.tracking.sync import sync

    mlflow_proxy.down()
    run_dir = tmp_path / "run"
    with pytest.warns(UserWarning) as caught:
        tracker = Tracker(
            run_dir,
            tracking_uri=mlflow_proxy.url,
            experiment="kept-experiment",
            run_name="kept-name",
            tags={"generalist.kind": "train"},
            retry_s=3600,
        )
        # as training logs its config: logging.run_name None is the param text "null"
        tracker.log_params({"logging": {"run_name": None, "experiment": "kept-experiment"}})
        tracker.log_metrics({"train/loss": 1.0}, 1)
        tracker.close()
    warned = [str(w.message) for w in caught if "MLflow at" in str(w.message)]
    assert len(warned) == 2 and all(f"`generalist sync {run_dir}`" in m for m in warned), warned
    mlflow_proxy.up()
    done = sync(run_dir)
    client = MlflowClient(mlflow_server)
    run = client.get_run(done["run_id"])
    assert done["tracking_uri"] == mlflow_proxy.url
    assert run.info.run_name == "kept-name"
    assert client.get_experiment(run.info.experiment_id).name == "kept-experiment"
    assert run.data.tags["generalist.kind"] == "train"
    assert [m.value for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1.0]


@pytest.mark.parametrize("in_flight_reached_mlflow", [True, False])
def test_rewind_sets_aside_and_mlflow_gets_every_step_once(
    tmp_path: Path, in_flight_reached_mlflow: bool
) -> None:
    """A run killed at step 9 resumes from its step-5 checkpoint: the killed process's steps
    6-9 are set aside (kept in metrics.set_aside.jsonl), metrics.jsonl reads as one run, and
    MLflow, which had 6-8 and maybe the line in flight (9) at the kill, has each step once."""
    from generalist.tracking.delivery import SET_ASIDE, rewind, write_record
    from generalist.tracking.mlflow_calls import log_metrics
    from generalist.tracking.run_records import append_metrics

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    killed = Tracker(run_dir, tracking_uri=uri, experiment="rewind")
    for step in range(1, 9):
        killed.log_metrics({"train/loss": 10.0 - step}, step)
    # the kill lands while step 9 is being sent: written locally, marked in flight, and (or
    # not) received by MLflow before the record says so
    append_metrics(run_dir, {"train/loss": 1.0}, 9, 1234.5)
    write_record(run_dir, killed.run_id, sending=8)
    if in_flight_reached_mlflow:
        log_metrics(killed._client, killed.run_id, {"train/loss": 1.0}, 1234500, 9)
    assert rewind(run_dir, 5) == 4
    assert [row["step"] for row in read_metrics(run_dir)] == [1, 2, 3, 4, 5]
    aside = [json.loads(line) for line in (run_dir / SET_ASIDE).read_text().splitlines()]
    assert [(r["step"], r["resumed_from"]) for r in aside] == [(s, 5) for s in range(6, 10)]
    resumed = Tracker(run_dir, tracking_uri=uri, experiment="rewind")
    for step in range(6, 11):
        resumed.log_metrics({"train/loss": 100.0 + step}, step)
    resumed.close()
    assert resumed.run_id == killed.run_id
    assert [row["step"] for row in read_metrics(run_dir)] == list(range(1, 11))
    history = MlflowClient(uri).get_metric_history(killed.run_id, "train/loss")
    by_step = sorted((m.step, m.value) for m in history)
    # 1-9 as the killed run sent them (the same losses, on an exact resume), 10 from the resumed
    assert by_step == [(s, 10.0 - s) for s in range(1, 9)] + [(9, 1.0), (10, 110.0)]
    assert rewind(run_dir, 10) == 0  # nothing after the last step: nothing moves
