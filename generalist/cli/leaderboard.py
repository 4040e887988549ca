"""`generalist leaderboard`: rank MLflow runs task by task (see generalist.eval.leaderboard).

generalist leaderboard [--tracking-uri URI] [--experiment NAME ...] [--metric TASK=METRIC ...]
                       [--tasks TASK ...] [--out DIR] [--reference medpalm-m] [--no-log]
                       [--import MODULE ...]

Writes leaderboard.md/.csv/.png under --out, logs them to a `leaderboard` run, and logs
rank/<task> and rank/mean onto every ranked run (sort the MLflow runs table by rank/mean).
Tasks from modules not --import-ed are ranked by the primary metric their runs name; a task
nothing names is reported with what to pass. --no-log writes the files only.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from generalist.catalog.loading import load_catalog
from generalist.cli.options import add_import_argument
from generalist.errors import GeneralistError
from generalist.eval.leaderboard import leaderboard
from generalist.tracking.mlflow_calls import default_tracking_uri


def parse_metric_overrides(items: Sequence[str]) -> dict[str, str]:
    """["task=metric", ...] -> {task: metric}."""
    out = {}
    for item in items:
        task, sep, metric = item.partition("=")
        if not sep or not task or not metric:
            raise GeneralistError(f"--metric {item!r}: write TASK=METRIC, e.g. vqa_rad=token_f1")
        out[task] = metric
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="generalist leaderboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--tracking-uri",
        default=None,
        help="default: $MLFLOW_TRACKING_URI or sqlite:///./mlruns/mlflow.db",
    )
    parser.add_argument("--experiment", nargs="+", default=["generalist"])
    parser.add_argument("--metric", nargs="*", default=[], metavar="TASK=METRIC")
    parser.add_argument("--tasks", nargs="*", default=[], help="only these tasks")
    parser.add_argument("--out", type=Path, default=Path("leaderboard"))
    parser.add_argument("--reference", choices=["medpalm-m"], default=None)
    parser.add_argument("--no-log", action="store_true", help="do not log it to MLflow")
    add_import_argument(parser)
    args = parser.parse_args(argv)
    load_catalog(args.imports)
    leaderboard(
        args.tracking_uri or default_tracking_uri(),
        args.experiment,
        args.out,
        parse_metric_overrides(args.metric),
        args.tasks,
        args.reference,
        log=not args.no_log,
    )
    return 0
