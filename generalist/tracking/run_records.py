"""A run directory's local records, readable with no MLflow at all: metrics.jsonl (one JSON
object per log call, non-finite values as null), params.json and run.json (each merged over
calls) and tables/<name>.jsonl, each written so that a kill leaves at worst one torn metrics line.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from generalist.atomic import atomic_write
from generalist.redact import redact_json

METRICS = "metrics.jsonl"


def count_lines(path: Path) -> int:
    """Lines in a file (0 when it does not exist)."""
    if not path.exists():
        return 0
    with open(path, "rb") as file:
        return sum(1 for _ in file)


def append_metrics(run_dir: Path, values: Mapping[str, float], step: int, now: float) -> None:
    """One line {"step", "time", <key>: value or null (non-finite)} onto metrics.jsonl."""
    finite = {k: (v if math.isfinite(v) else None) for k, v in values.items()}
    line = {"step": int(step), "time": now, **finite}
    with open(run_dir / METRICS, "a", encoding="utf-8") as out:
        out.write(json.dumps(line) + "\n")


def merge_params(run_dir: Path, flat: Mapping[str, str]) -> None:
    """Merge flattened params into <run_dir>/params.json (later calls win)."""
    path = run_dir / "params.json"
    merged = json.loads(path.read_text()) if path.exists() else {}
    merged.update(redact_json(dict(flat)))  # type: ignore[arg-type]
    atomic_write(path, json.dumps(merged, indent=1, sort_keys=True))


def merge_identity(run_dir: Path, tags: Mapping[str, str], **identity: object) -> None:
    """Who the run is, in <run_dir>/run.json (tracking URI, experiment, name, tags), for
    `generalist sync` to create it as it was meant; tags merge over calls (later ones win)."""
    path = run_dir / "run.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    merged = {**saved, **identity, "tags": {**saved.get("tags", {}), **tags}}
    merged = redact_json(merged)  # a password in the tracking URI: generalist.redact
    atomic_write(path, json.dumps(merged, indent=1, sort_keys=True))


def write_table(run_dir: Path, name: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows as <run_dir>/tables/<name>.jsonl, one JSON object a line."""
    path = run_dir / "tables" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (json.dumps(redact_json(dict(r)), default=str) + "\n" for r in rows)
    atomic_write(path, "".join(lines))


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The lines of <run_dir>/metrics.jsonl (a torn last line from a kill is skipped)."""
    path = Path(run_dir) / METRICS
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
