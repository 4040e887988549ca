"""`generalist sync RUN_DIR [--tracking-uri URI]`: send a run's local records to MLflow (see
generalist.tracking.sync)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from generalist.errors import GeneralistError
from generalist.tracking.sync import sync


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="generalist sync", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path, help="a run directory holding metrics.jsonl")
    parser.add_argument(
        "--tracking-uri",
        help="default: the one the run logged to (mlflow_run.json), else its config's, "
        "else $MLFLOW_TRACKING_URI or sqlite:///./mlruns/mlflow.db",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.run_dir.is_dir():
        raise GeneralistError(f"run directory {args.run_dir} does not exist")
    done = sync(args.run_dir, args.tracking_uri)
    print(
        f"generalist sync: {done['metric_lines_sent']} new metric line(s) of "
        f"{done['metric_lines']} sent to MLflow run {done['run_id']} at {done['tracking_uri']}"
    )
    return 0
