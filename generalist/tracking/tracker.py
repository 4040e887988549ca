"""Experiment tracking: a local metrics.jsonl always, MLflow when it answers.

    tracker = Tracker(run_dir, tracking_uri=None, experiment="generalist", run_name=None,
                      kind="training")      # the generalist.kind tag (tracking.run_kinds)
    tracker.log_params(config_dict)          # nested dict -> "a.b.c" params (MLflow limits)
    tracker.log_metrics({"train/loss": 1.2}, step=10)
    tracker.set_tags({"generalist.checkpoint": "..."})   # also kept in <run_dir>/run.json
    tracker.log_artifact("config.yaml")      # a file (or directory) into the run's artifacts
    tracker.log_table("predictions/vqa_rad/step-10", rows)   # list of dicts -> MLflow table
    tracker.close()                          # sends the backlog, marks the run finished

Every metric is appended to `<run_dir>/metrics.jsonl` first (one JSON object per call:
{"step", "time", <key>: value, ...}; non-finite values are written as null), params to
`<run_dir>/params.json` and tables to `<run_dir>/tables/<name>.jsonl`, so a run is readable with
no MLflow at all; `<run_dir>/run.json` keeps the run's URI, experiment, name and tags for
`generalist sync`. MLflow calls go through a queue: when the server does not answer, the tracker
warns once, keeps the queue, retries at most every `retry_s` seconds on later calls and on
`sync()`, and sends the backlog in order once it answers. `mlflow=False` keeps the local
records only. The MLflow run id is kept in
`<run_dir>/mlflow_run.json`, so a resumed training run keeps logging into the same MLflow run.
`<run_dir>/mlflow_sent.json` counts the metrics.jsonl lines MLflow has received; a later Tracker
on the same run_dir (a resumed run, `generalist sync RUN_DIR`) sends the lines after it first,
so a metric is sent once even across a kill (the one line in flight is sent again with its own
timestamp, which MLflow's SQL stores keep once), and a resumed run does not send again the steps
MLflow has from the lines it set aside (generalist.tracking.delivery).

Default tracking URI: $MLFLOW_TRACKING_URI, else the sqlite file `./mlruns/mlflow.db`
(artifacts beside it in ./mlruns/artifacts), so nothing needs a server. `enabled=False` (ranks
other than 0) makes every method a no-op.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generalist.redact import redact, redact_json
from generalist.tracking.delivery import read_record, unheld, write_record
from generalist.tracking.mlflow_calls import (
    default_tracking_uri,
    flatten_params,
    is_remote,
    log_metrics,
    open_run,
    safe_key,
    send,
    server_answers,
    table_columns,
)
from generalist.tracking.run_kinds import KIND_TAG, check_kind
from generalist.tracking.run_records import (
    append_metrics,
    count_lines,
    merge_identity,
    merge_params,
    write_table,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient


class Tracker:
    """Metrics/params/artifacts/tables to <run_dir> and to MLflow (see the module docstring)."""

    def __init__(
        self,
        run_dir: str | Path,
        tracking_uri: str | None = None,
        experiment: str = "generalist",
        run_name: str | None = None,
        enabled: bool = True,
        tags: Mapping[str, str] | None = None,
        retry_s: float = 30.0,
        mlflow: bool = True,
        kind: str | None = None,
    ) -> None:
        self.enabled = enabled
        self.mlflow = mlflow
        self.run_dir = Path(run_dir)
        self.tracking_uri = tracking_uri or default_tracking_uri()
        self.experiment = experiment
        self.run_name = run_name or self.run_dir.name
        self.retry_s = retry_s
        self.run_id: str | None = None
        self._tags = dict(tags or {})
        if kind is not None:
            self._tags[KIND_TAG] = check_kind(kind)
        self._queue: list[tuple[str, Any]] = []
        self._client: MlflowClient | None = None
        self._down_since: float | None = None
        self._warned = False
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        merge_identity(
            self.run_dir,
            self._tags,
            tracking_uri=self.tracking_uri,
            experiment=experiment,
            run_name=self.run_name,
        )
        if is_remote(self.tracking_uri):
            # Fail fast instead of mlflow's default minutes of HTTP retries; the queue retries.
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
            os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
        elif self.tracking_uri.startswith("sqlite:///"):
            Path(self.tracking_uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
        # lines an earlier process wrote that MLflow may not have yet: sent first, when it answers
        self._lines = count_lines(self.run_dir / "metrics.jsonl")
        if self._lines or read_record(self.run_dir).get("resend"):
            self._queue.append(("backlog", self._lines))
        if self._tags:  # also on a reopened run, which may predate them
            self._queue.append(("tags", dict(self._tags)))
        self._flush(force=True)

    # ---- public API -------------------------------------------------------------------------
    def log_params(self, params: Mapping[str, Any]) -> None:
        """Flattened params; also merged into <run_dir>/params.json."""
        if not self.enabled:
            return
        flat = redact_json(flatten_params(params))  # MLflow and params.json: no passwords
        merge_params(self.run_dir, flat)
        self._queue.append(("params", flat))
        self._flush()

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Run tags (strings); also merged into <run_dir>/run.json."""
        if not self.enabled:
            return
        values = {safe_key(k): str(v) for k, v in tags.items()}
        merge_identity(self.run_dir, values)
        self._queue.append(("tags", values))
        self._flush()

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Append one line to metrics.jsonl, then queue for MLflow (non-finite values skipped)."""
        if not self.enabled:
            return
        now = time.time()
        values = {safe_key(k): float(v) for k, v in metrics.items()}
        append_metrics(self.run_dir, values, step, now)
        finite = {k: v for k, v in values.items() if math.isfinite(v)}
        self._queue.append(("metrics", (finite, int(step), int(now * 1000), self._lines)))
        self._lines += 1
        self._flush()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """A file or directory into the run's artifacts (uploaded when MLflow answers)."""
        if not self.enabled:
            return
        self._queue.append(("artifact", (str(Path(path).resolve()), artifact_path)))
        self._flush()

    def log_table(self, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Rows (dicts with the same keys) as <run_dir>/tables/<name>.jsonl and an MLflow table."""
        if not self.enabled:
            return
        write_table(self.run_dir, name, rows)
        self._queue.append(("table", (table_columns(rows), f"tables/{name}.json")))
        self._flush()

    @property
    def pending(self) -> int:
        """Calls not yet sent to MLflow."""
        return len(self._queue)

    def sync(self) -> bool:
        """Try now to send the backlog; True when nothing is left."""
        if not self.enabled:
            return True
        self._flush(force=True)
        return not self._queue

    def close(self, status: str = "FINISHED") -> None:
        """Send the backlog and mark the run `status`; warns if MLflow still does not answer."""
        if not self.enabled:
            return
        self._set_sent(status=status)  # `generalist sync` restores it after reopening the run
        self._queue.append(("end", status))
        if not self.sync():
            warnings.warn(
                f"MLflow at {redact(self.tracking_uri)} did not answer; {self.pending} call(s) "
                f"not sent. Everything is in {self.run_dir} (metrics.jsonl, params.json, "
                f"tables/): send it once MLflow answers with `generalist sync {self.run_dir}`",
                stacklevel=2,
            )

    # ---- the queue ----------------------------------------------------------------------------
    def _flush(self, force: bool = False) -> None:
        if not self.mlflow:  # local records only (logging.mlflow false, --no-mlflow)
            self._queue.clear()
            return
        waiting = self._down_since is not None and time.time() - self._down_since < self.retry_s
        if waiting and not force:
            return
        if is_remote(self.tracking_uri) and not server_answers(self.tracking_uri):
            self._mark_down("its /health endpoint does not answer")
            return
        try:
            self._connect()
        except Exception as err:  # server error, unwritable database: keep everything queued
            self._mark_down(str(err).splitlines()[0][:200] if str(err) else type(err).__name__)
            return
        while self._queue:
            try:
                self._send(*self._queue[0])
            except Exception as err:
                if is_remote(self.tracking_uri) and not server_answers(self.tracking_uri):
                    self._mark_down(str(err).splitlines()[0][:200])
                    return
                # Answered but refused (e.g. a param that changed on resume): drop that call.
                warnings.warn(f"MLflow refused {self._queue[0][0]}: {err}", stacklevel=3)
            self._queue.pop(0)
        self._down_since = None

    def _mark_down(self, why: str) -> None:
        self._down_since = time.time()
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"MLflow at {redact(self.tracking_uri)} is unreachable ({why}); training goes on, "
                f"metrics go to {self.run_dir / 'metrics.jsonl'} and are sent when it is back "
                f"(or later with `generalist sync {self.run_dir}`)",
                stacklevel=4,
            )

    def _connect(self) -> None:
        if self.run_id is not None:
            return
        from mlflow import MlflowClient

        self._client = MlflowClient(self.tracking_uri)
        self.run_id = open_run(
            self._client,
            self.run_dir,
            self.tracking_uri,
            self.experiment,
            self.run_name,
            self._tags,
        )

    def _send(self, kind: str, payload: object) -> None:
        if kind == "metrics":
            values, step, stamp, line = payload
            if line >= self.sent_lines():  # else an earlier Tracker's backlog already held it
                self._set_sent(sending=line)  # a kill from here to the next line: in doubt
                values = unheld(self._sent(), self.run_id, values, step)
                log_metrics(self._client, self.run_id, values, stamp, step)
                self._set_sent(lines=line + 1)
        elif kind == "backlog":
            self._send_backlog(payload)
        else:
            send(self._client, self.run_id, kind, payload)

    # ---- delivery record (mlflow_sent.json, generalist.tracking.delivery) ----------------------
    def _sent(self) -> dict[str, Any]:
        return read_record(self.run_dir)

    def sent_lines(self) -> int:
        """How many lines of metrics.jsonl the current MLflow run has received."""
        saved = self._sent()
        return int(saved.get("lines", 0)) if saved.get("run_id") == self.run_id else 0

    def _set_sent(self, **values: object) -> None:
        write_record(self.run_dir, self.run_id, **values)

    def _send_backlog(self, upto: int) -> None:
        """Lines [sent_lines, upto) of metrics.jsonl (written by earlier processes) to MLflow,
        after the set-aside lines in doubt at a kill (sent again: MLflow keeps one copy)."""
        record = self._sent()
        for row in record.get("resend", []) if record.get("run_id") == self.run_id else []:
            row = dict(row)
            step, stamp = int(row.pop("step")), int(float(row.pop("time")) * 1000)
            log_metrics(self._client, self.run_id, row, stamp, step)
        self._set_sent(resend=[])
        start = self.sent_lines()
        lines = (self.run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
        for number in range(start, min(upto, len(lines))):
            try:
                row = json.loads(lines[number])
            except json.JSONDecodeError:  # a line torn by a kill
                continue
            step, stamp = int(row.pop("step")), int(float(row.pop("time")) * 1000)
            row = unheld(record, self.run_id, row, step)
            log_metrics(self._client, self.run_id, row, stamp, step)
            self._set_sent(lines=number + 1)
        self._set_sent(lines=max(start, upto))
