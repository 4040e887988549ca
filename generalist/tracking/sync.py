"""Sending a run directory's local records to MLflow (`generalist sync RUN_DIR`).

A run directory (a training output_dir, an evaluation's eval/ dir) holds everything it logged:
metrics.jsonl, params.json, tables/*.jsonl. When MLflow was down for part of the run (or all of
it), this replays them into the same MLflow run (the id in mlflow_run.json) or a new one, and
sends only the metrics.jsonl lines MLflow has not received (mlflow_sent.json counts them), so
running it twice, or after the run itself caught up, duplicates nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from generalist.errors import GeneralistError
from generalist.redact import REDACTED, redact
from generalist.tracking.mlflow_calls import is_remote, server_answers
from generalist.tracking.run_records import read_metrics
from generalist.tracking.tracker import Tracker


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except json.JSONDecodeError as err:
        raise GeneralistError(f"{path} is not valid JSON ({err}); fix or remove it") from None


def _param(params: dict, key: str) -> str | None:
    """A flattened param as given; None for a None logged as the text "null"."""
    value = params.get(key)
    return None if value in (None, "null", "None", "") else value


def sync(run_dir: Path, tracking_uri: str | None = None) -> dict[str, object]:
    """Send run_dir's params, tables and unsent metrics; returns what was done."""
    if not (run_dir / "metrics.jsonl").is_file() and not (run_dir / "params.json").is_file():
        raise GeneralistError(
            f"{run_dir} is not a run directory (no metrics.jsonl or params.json); pass the "
            f"output_dir of a training run or an evaluation's output directory"
        )
    pointer = _read_json(run_dir / "mlflow_run.json")
    params = _read_json(run_dir / "params.json")
    identity = _read_json(run_dir / "run.json")  # written by the Tracker (older runs: params)
    uri = tracking_uri or pointer.get("tracking_uri") or identity.get("tracking_uri")
    uri = uri or _param(params, "logging.tracking_uri")
    if uri and f":{REDACTED}@" in uri:
        raise GeneralistError(
            f"the run recorded its MLflow URI without its password ({uri}); pass the full URI "
            f"with --tracking-uri"
        )
    if uri and is_remote(uri) and not server_answers(uri, timeout=10):
        raise GeneralistError(
            f"the MLflow server at {redact(uri)} does not answer; start it and re-run"
        )
    sent = _read_json(run_dir / "mlflow_sent.json")
    status = sent.get("status")  # the status the run was closed with, if it was
    before = int(sent.get("lines", 0)) if sent.get("run_id") == pointer.get("run_id") else 0
    tracker = Tracker(
        run_dir,
        tracking_uri=uri,
        experiment=identity.get("experiment")
        or _param(params, "logging.experiment")
        or "generalist",
        run_name=identity.get("run_name") or _param(params, "logging.run_name") or run_dir.name,
        tags=identity.get("tags") or {},
    )
    if params:
        tracker.log_params(params)
    tables = run_dir / "tables"
    for path in sorted(tables.rglob("*.jsonl")) if tables.is_dir() else []:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        tracker.log_table(str(path.relative_to(tables).with_suffix("")), rows)
    if not tracker.sync() or tracker.run_id is None:
        raise GeneralistError(
            f"MLflow at {redact(tracker.tracking_uri)} did not take the run ({tracker.pending} "
            f"call(s) left); check the server and re-run `generalist sync {run_dir}`"
        )
    if status:
        tracker.close(status)
    lines = len(read_metrics(run_dir)) if (run_dir / "metrics.jsonl").exists() else 0
    return {
        "run_id": tracker.run_id,
        "tracking_uri": redact(tracker.tracking_uri),
        "metric_lines_sent": tracker.sent_lines() - before,
        "metric_lines": lines,
    }
