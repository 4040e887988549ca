"""What MLflow has of a run directory's metrics.jsonl (the delivery record, mlflow_sent.json), and
a resumed run's rewind of its records to the checkpoint it resumes from.

    {"run_id": "...", "lines": 40, "sending": 40, "status": "FINISHED",
     "held": {"17": ["train/loss", ...]}, "resend": [{"step": 17, "time": ..., ...}]}

- lines: metrics.jsonl lines [0, lines) the MLflow run `run_id` has received;
- sending: the line being sent; a kill between the send and the record leaves it in doubt, and
  it is sent again with its own timestamp (MLflow's SQL stores keep an identical metric once);
- held: (step, keys) the MLflow run has from lines that a resumed run set aside, so the resumed
  run does not send the same step twice;
- resend: set-aside lines in doubt at the kill, sent again (same timestamps) by the next Tracker.

A new MLflow run (another run_id) starts a new record.

rewind(run_dir, step): a run resumed from the checkpoint of `step` sets aside, into
metrics.set_aside.jsonl (each line with "resumed_from": step; nothing is deleted), the lines the
interrupted process logged after that step, so metrics.jsonl reads as one run.
move_previous(run_dir): a run that starts afresh (step 0) in a used run dir is a new run: the
records of the previous one move to previous-<time>/, and a new MLflow run is made.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from generalist.atomic import atomic_write
from generalist.tracking.run_records import METRICS

RECORD = "mlflow_sent.json"
SET_ASIDE = "metrics.set_aside.jsonl"
RUN_FILES = (METRICS, SET_ASIDE, RECORD, "params.json", "mlflow_run.json", "run.json", "tables")


def read_record(run_dir: Path) -> dict[str, Any]:
    """The delivery record ({} when there is none)."""
    path = run_dir / RECORD
    return json.loads(path.read_text()) if path.exists() else {}


def write_record(run_dir: Path, run_id: str | None, **values: object) -> None:
    """Merge `values` into the record of MLflow run `run_id` (a new run_id: a new record)."""
    saved = read_record(run_dir)
    if run_id is not None and saved.get("run_id") != run_id:
        saved = {"run_id": run_id, "status": saved.get("status")}
    atomic_write(run_dir / RECORD, json.dumps({**saved, **values}))


def unheld(record: Mapping[str, Any], run_id: str | None, values: dict, step: int) -> dict:
    """`values` without the keys MLflow run `run_id` already holds at `step` (see `held`)."""
    held = record.get("held", {}).get(str(step)) if record.get("run_id") == run_id else None
    return {k: v for k, v in values.items() if k not in held} if held else values


def _row(line: str) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except json.JSONDecodeError:  # a line torn by a kill
        return None
    return row if isinstance(row, dict) and isinstance(row.get("step"), int) else None


def rewind(run_dir: Path, step: int) -> int:
    """Set aside the metrics.jsonl lines from the first one after `step` (or torn) onwards and
    note in the delivery record what MLflow has of them. Returns the number set aside."""
    path = run_dir / METRICS
    if not path.exists():
        return 0
    lines = path.read_text(encoding="utf-8").splitlines()
    rows = [_row(line) for line in lines]
    cut = next((i for i, r in enumerate(rows) if r is None or r["step"] > step), len(lines))
    if cut == len(lines):
        return 0
    with open(run_dir / SET_ASIDE, "a", encoding="utf-8") as aside:
        for line, row in zip(lines[cut:], rows[cut:]):
            aside.write(json.dumps({"resumed_from": step, **(row or {"torn": line})}) + "\n")
    record = read_record(run_dir)
    if record:
        sent = int(record.get("lines", 0))
        doubt = record.get("sending")
        maybe_sent = max(sent, doubt + 1 if isinstance(doubt, int) else 0)
        held = {k: set(v) for k, v in record.get("held", {}).items()}
        resend = list(record.get("resend", []))
        for number in range(cut, min(maybe_sent, len(lines))):
            row = rows[number]
            if row is None:
                continue
            keys = {k for k, v in row.items() if k not in ("step", "time") and v is not None}
            held.setdefault(str(row["step"]), set()).update(keys)
            if number >= sent:  # in flight at the kill: maybe received, so sent again
                resend.append(row)
        record.pop("sending", None)
        record.update(lines=min(sent, cut), resend=resend)
        record["held"] = {k: sorted(v) for k, v in held.items()}
        atomic_write(run_dir / RECORD, json.dumps(record))
    atomic_write(path, "".join(line + "\n" for line in lines[:cut]))
    return len(lines) - cut


def move_previous(run_dir: Path) -> Path | None:
    """Move a previous run's records (RUN_FILES) to run_dir/previous-<time>/; its folder, or
    None when there were none."""
    found = [run_dir / name for name in RUN_FILES if (run_dir / name).exists()]
    if not found:
        return None
    target = run_dir / time.strftime("previous-%Y%m%d-%H%M%S")
    n = 1
    while target.exists():
        n += 1
        target = target.with_name(f"{target.name.split('.')[0]}.{n}")
    target.mkdir()
    for path in found:
        os.replace(path, target / path.name)
    return target
