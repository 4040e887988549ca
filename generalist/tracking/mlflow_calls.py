"""Talking to MLflow: its limits (key and value lengths, batch sizes), valid keys and flattened
params, the default tracking URI, a server's health, experiments, and the batched log calls.

Stateless: generalist.tracking's Tracker owns the queue, the retries and the delivery record.
"""

from __future__ import annotations

import base64
import json
import os
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generalist.atomic import atomic_write
from generalist.redact import redact

if TYPE_CHECKING:
    from mlflow import MlflowClient

MAX_KEY = 250  # MLflow's key length limit (mlflow.utils.validation.MAX_ENTITY_KEY_LENGTH)
MAX_VALUE = 6000  # MLflow's param value limit (MAX_PARAM_VAL_LENGTH)
PARAMS_PER_BATCH = 100  # MAX_PARAMS_TAGS_PER_BATCH
METRICS_PER_BATCH = 1000  # MAX_METRICS_PER_BATCH
_KEY_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-. /:")


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else sqlite:///<cwd>/mlruns/mlflow.db."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    return f"sqlite:///{(Path.cwd() / 'mlruns' / 'mlflow.db').resolve()}"


def safe_key(key: str) -> str:
    """An MLflow-valid key: unsupported characters -> '_', at most MAX_KEY characters."""
    return "".join(c if c in _KEY_CHARS else "_" for c in key)[:MAX_KEY]


def flatten_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mappings -> {"a.b.c": str(value)}; values cut to MLflow's 6000 characters."""
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, f"{name}."))
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        flat[safe_key(name)] = text[:MAX_VALUE]
    return flat


def _chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def server_answers(uri: str, timeout: float = 2.0) -> bool:
    """True when an MLflow server at `uri` answers its /health endpoint (a `user:password@`
    in the URI is sent as basic auth, as MLflow's own client does; urllib would take it for
    part of the host)."""
    try:
        parts = urllib.parse.urlsplit(uri)
        headers = {}
        if parts.username is not None:
            user, password = parts.username, parts.password or ""
            pair = f"{urllib.parse.unquote(user)}:{urllib.parse.unquote(password)}"
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
            netloc = f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
            uri = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        request = urllib.request.Request(uri.rstrip("/") + "/health", headers=headers)
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            return reply.status == 200
    except (OSError, ValueError):
        return False


def ensure_experiment(client: MlflowClient, name: str, tracking_uri: str) -> str:
    """The id of experiment `name`, created (artifacts beside a sqlite file) when missing."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        location = (db.parent / "artifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def table_columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Rows -> {column: values} as MLflow's log_table takes them (a missing cell is None)."""
    columns: dict[str, list[Any]] = {}
    for row in rows:
        for key in row:
            columns.setdefault(key, [])
    for row in rows:
        for key, column in columns.items():
            column.append(row.get(key))
    return columns


def log_metrics(
    client: MlflowClient, run_id: str, values: Mapping[str, float | None], stamp: int, step: int
) -> None:
    """One step's metrics (None values left out) in batches of METRICS_PER_BATCH."""
    from mlflow.entities import Metric

    entries = [Metric(k, float(v), stamp, step) for k, v in values.items() if v is not None]
    for chunk in _chunks(entries, METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=chunk)


def send(client: MlflowClient, run_id: str, kind: str, payload: object) -> None:
    """One queued call of kind params, tags, artifact, table or end (see Tracker)."""
    from mlflow.entities import Param, RunTag

    if kind == "params":
        params = [Param(k, v) for k, v in payload.items()]
        for chunk in _chunks(params, PARAMS_PER_BATCH):
            client.log_batch(run_id, params=chunk)
    elif kind == "tags":
        tags = [RunTag(k, v) for k, v in payload.items()]
        for chunk in _chunks(tags, PARAMS_PER_BATCH):
            client.log_batch(run_id, tags=chunk)
    elif kind == "artifact":
        path, artifact_path = payload
        if Path(path).is_dir():
            client.log_artifacts(run_id, path, artifact_path)
        else:
            client.log_artifact(run_id, path, artifact_path)
    elif kind == "table":
        columns, artifact_file = payload
        client.log_table(run_id, data=columns, artifact_file=artifact_file)
    elif kind == "end":
        client.set_terminated(run_id, status=payload)
    else:
        raise ValueError(f"unknown MLflow call kind {kind!r}")


def open_run(
    client: MlflowClient,
    run_dir: Path,
    tracking_uri: str,
    experiment: str,
    run_name: str,
    tags: Mapping[str, str],
) -> str:
    """The id of the run `run_dir` logs to: the one in <run_dir>/mlflow_run.json marked RUNNING
    again (a resumed run, `generalist sync`), else a new run whose id is written there."""
    pointer = run_dir / "mlflow_run.json"
    if pointer.exists():
        saved = json.loads(pointer.read_text())
        if saved.get("tracking_uri") == redact(tracking_uri) and _reopen(client, saved["run_id"]):
            return str(saved["run_id"])
    experiment_id = ensure_experiment(client, experiment, tracking_uri)
    run_id = client.create_run(experiment_id, run_name=run_name, tags=dict(tags)).info.run_id
    record = {"tracking_uri": redact(tracking_uri), "run_id": run_id}  # no password on disk
    atomic_write(pointer, json.dumps(record, indent=1))
    return str(run_id)


def _reopen(client: MlflowClient, run_id: str) -> bool:
    """Mark a run of a previous process RUNNING again; False when it no longer exists."""
    from mlflow.exceptions import MlflowException

    try:
        client.update_run(run_id, status="RUNNING")
    except MlflowException as err:
        if err.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return False
        raise
    return True
