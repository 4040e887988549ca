"""The MLflow server goes away mid-run: logging goes on into metrics.jsonl, the backlog is sent
when the server is back (also a killed process's, by the next Tracker on the run dir: a resumed
run) or on request with `generalist sync RUN_DIR`, and MLflow ends up with every metric once.

(tests/eval/test_tracking.py covers one Tracker whose server is down, then back.) The server is
the real `mlflow server` of tests/support/mlflow_server.py behind a TCP proxy that refuses
connections while "down", as a stopped server does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import warnings

from mlflow import MlflowClient

from generalist.tracking.mlflow_calls import server_answers
from generalist.tracking.run_records import read_metrics
from generalist.tracking.tracker import Tracker

CHILD = """
import sys
from generalist.tracking.tracker import Tracker
tracker = Tracker(sys.argv[1], tracking_uri=sys.argv[2], experiment="outage", retry_s=3600)
tracker.log_params({"steps": 10})
for step in range(3):
    tracker.log_metrics({"train/loss": 10.0 - step, "train/lr": 0.1}, step)
print("pending", tracker.pending, flush=True)
sys.stdin.readline()  # the test stops the server
for step in range(3, 6):
    tracker.log_metrics({"train/loss": 10.0 - step, "train/lr": 0.1}, step)
print("pending", tracker.pending, flush=True)
sys.stdin.readline()  # killed here
"""


def stop(proxy) -> None:
    """proxy.down(), then one connection to wake its accept() (a close from another thread does
    not interrupt a blocked accept on Linux: one more connection would still get through)."""
    proxy.down()
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", proxy.port), 1):
        pass
    assert not server_answers(proxy.url, timeout=1)


def history(uri: str, run_id: str) -> list[tuple[int, float]]:
    client = MlflowClient(uri)
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, "train/loss"))


def expected(steps: int) -> list[tuple[int, float]]:
    return [(step, 10.0 - step) for step in range(steps)]


def test_server_down_mid_run_then_back_and_sync(mlflow_server, mlflow_proxy, tmp_path, cli):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(run_dir), mlflow_proxy.url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert child.stdout.readline().split() == ["pending", "0"]  # steps 0-2 reached MLflow
        stop(mlflow_proxy)
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.stdout.readline().split() == ["pending", "3"]  # steps 3-5 only local
    finally:
        os.kill(child.pid, signal.SIGKILL)  # the training process dies with its queue
        child.wait()
    run_id = json.loads((run_dir / "mlflow_run.json").read_text())["run_id"]
    assert history(mlflow_server, run_id) == expected(3)
    assert [row["step"] for row in read_metrics(run_dir)] == list(range(6))

    # the resumed run: its Tracker logs while the server is still down, then it comes back
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tracker = Tracker(run_dir, tracking_uri=mlflow_proxy.url, experiment="outage", retry_s=0)
        tracker.log_metrics({"train/loss": 4.0}, 6)
        assert tracker.run_id is None and tracker.pending == 2  # backlog of 0-5, step 6
        mlflow_proxy.up()
        tracker.log_metrics({"train/loss": 3.0}, 7)
        assert tracker.pending == 0 and tracker.run_id == run_id  # the same MLflow run
        assert history(mlflow_server, run_id) == expected(8)  # the killed run's 3-5 included
        # down again until the end of the run: close() cannot send
        stop(mlflow_proxy)
        tracker.log_metrics({"train/loss": 2.0}, 8)
        tracker.log_metrics({"train/loss": 1.0}, 9)
        tracker.close()
    assert tracker.pending == 3
    assert len(read_metrics(run_dir)) == 10

    # on request, with the real command, once the server is back; twice sends nothing twice
    down = cli("sync", str(run_dir))
    assert down.returncode == 2 and "does not answer" in down.stderr, down.stderr
    mlflow_proxy.up()
    for new in (2, 0):
        result = cli("sync", str(run_dir))
        assert result.returncode == 0, result.stderr[-3000:]
        assert f"{new} new metric line(s) of 10 sent to MLflow run {run_id}" in result.stdout
        assert history(mlflow_server, run_id) == expected(10)
    run = MlflowClient(mlflow_server).get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["steps"] == "10"
    lr = MlflowClient(mlflow_server).get_metric_history(run_id, "train/lr")
    assert sorted(m.step for m in lr) == list(range(6))
