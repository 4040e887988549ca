"""The leaderboard (`generalist leaderboard`): MLflow runs ranked task by task on each task's
primary metric.

Reads the latest `eval/<task>/<metric>` of every run in the experiments (runs tagged
`generalist.kind=leaderboard` are skipped), builds a runs x tasks table of each task's primary
metric, ranks the runs per task (1 = best, ties share the average rank, a run without the task
is not ranked on it) and sorts by the mean rank over the tasks each run has. Prints it, writes
leaderboard.md, leaderboard.csv and leaderboard.png under --out, logs them to a `leaderboard`
run (generalist.kind=leaderboard) of the first experiment, and logs `rank/<task>` and
`rank/mean` onto every ranked run: sorting the MLflow runs table by `rank/mean` (primary
metrics as columns) is then the leaderboard, in the MLflow UI itself.

A task's primary metric: --metric TASK=METRIC, else the registered task's `primary_metric`, else
the `generalist.primary_metric.<task>` tag its runs carry (every evaluation writes it), so tasks
whose module was not --import-ed are still ranked; a task none of these names is reported with
how to resolve it, never dropped silently.

--reference medpalm-m adds unranked rows with the Med-PaLM M 12B/84B/562B numbers of
arXiv 2307.14334 (v1): Table 3 (per model size; Table 2 prints only the best of the three),
converted from percent to fractions. Only tasks whose metric the paper reports get a value.
They are a reference point, not a comparison: the paper's models, data and splits differ.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generalist.catalog.task import TASKS
from generalist.errors import GeneralistError
from generalist.eval.leaderboard_report import plot, to_markdown
from generalist.eval.medpalm_m import reference_rows
from generalist.tracking.mlflow_calls import is_remote, log_metrics, server_answers
from generalist.tracking.run_kinds import KIND_TAG, PRIMARY_TAG
from generalist.tracking.tracker import Tracker

if TYPE_CHECKING:
    import pandas as pd


def fetch_runs(tracking_uri: str, experiments: Sequence[str]) -> list[dict[str, Any]]:
    """[{"name", "run_id", "metrics", "tags"}] of the runs in `experiments` (leaderboard runs
    skipped)."""
    from mlflow import MlflowClient

    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :])
        if not db.is_file():  # MlflowClient would create an empty database there
            raise GeneralistError(
                f"no MLflow database at {db}; pass --tracking-uri (the one training logged to)"
            )
    if is_remote(tracking_uri) and not server_answers(tracking_uri, timeout=10):
        # MlflowClient would retry for minutes before failing with a traceback
        raise GeneralistError(
            f"the MLflow server at {tracking_uri} does not answer; start it, or pass the "
            f"--tracking-uri training logged to"
        )
    client = MlflowClient(tracking_uri)
    ids = []
    for name in experiments:
        found = client.get_experiment_by_name(name)
        if found is None:
            known = [e.name for e in client.search_experiments()]
            raise GeneralistError(
                f"no MLflow experiment {name!r} at {tracking_uri}; known: {known or '(none)'}; "
                f"pass --tracking-uri or --experiment"
            )
        ids.append(found.experiment_id)
    runs = []
    for run in client.search_runs(ids, max_results=10000, order_by=["attributes.start_time ASC"]):
        if run.data.tags.get(KIND_TAG) == "leaderboard":
            continue
        runs.append(
            {
                "name": run.info.run_name,
                "run_id": run.info.run_id,
                "metrics": run.data.metrics,
                "tags": dict(run.data.tags),
            }
        )
    return runs


def task_metrics(
    runs: Sequence[Mapping[str, Any]], overrides: Mapping[str, str], only: Sequence[str] = ()
) -> tuple[dict[str, str], list[str]]:
    """({task: metric}, [tasks with no known primary metric]) for every task some run has an
    `eval/<task>/<metric>` for: --metric, else the registry, else the runs' primary-metric tag."""
    seen, tagged = set(), {}
    for run in runs:
        for key in run["metrics"]:
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "eval":
                seen.add(parts[1])
        for key, value in run.get("tags", {}).items():
            if key.startswith(PRIMARY_TAG):
                tagged[key[len(PRIMARY_TAG) :]] = value
    chosen, unresolved = {}, []
    for task in sorted(seen if not only else set(only)):
        if task in overrides:
            chosen[task] = overrides[task]
        elif task in TASKS:
            chosen[task] = TASKS.get(task).primary_metric
        elif task in tagged:
            chosen[task] = tagged[task]
        elif task in seen:
            unresolved.append(task)
    for task in overrides:
        if task not in chosen and (not only or task in only):
            chosen[task] = overrides[task]
    return chosen, unresolved


def unresolved_hint(tasks: Sequence[str]) -> str:
    """What to do about tasks whose primary metric is known neither here nor from their runs."""
    example = tasks[0]
    return (
        f"task(s) {', '.join(tasks)} have eval/ metrics but are not registered here and their "
        f"runs name no primary metric: pass --import MODULE (the file or module that registers "
        f"them, as the training config's `imports:`) or --metric {example}=METRIC"
    )


def build_table(runs: Sequence[Mapping[str, Any]], metrics: Mapping[str, str]) -> pd.DataFrame:
    """A pandas DataFrame: one row per run (index = unique run label), one column per task,
    plus `mean_rank` and `tasks_ranked`; sorted best first."""
    import pandas as pd

    scored = []  # only runs with a score: a training run named like its evaluation is no clash
    for run in runs:
        row = {t: run["metrics"].get(f"eval/{t}/{m}", math.nan) for t, m in metrics.items()}
        if not all(math.isnan(v) for v in row.values()):
            scored.append((run, row))
    names = [run["name"] for run, _ in scored]
    labels = [
        run["name"] if names.count(run["name"]) == 1 else f"{run['name']} ({run['run_id'][:8]})"
        for run, _ in scored
    ]
    rows = [row for _, row in scored]
    table = pd.DataFrame(rows, index=labels, columns=list(metrics), dtype=float)
    ranks = table.rank(axis=0, ascending=False, method="average")  # NaN stays unranked
    table["mean_rank"] = ranks.mean(axis=1)
    table["tasks_ranked"] = ranks.notna().sum(axis=1)
    table = table.sort_values(["mean_rank", "tasks_ranked"], ascending=[True, False])
    table.attrs["run_ids"] = {label: run["run_id"] for label, (run, _) in zip(labels, scored)}
    return table


def rank_metrics(table: pd.DataFrame, metrics: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """{run id: {"rank/<task>": rank, ..., "rank/mean": mean rank}} of a build_table table."""
    ranks = table[list(metrics)].rank(axis=0, ascending=False, method="average")
    out = {}
    for label, run_id in table.attrs["run_ids"].items():
        values = {f"rank/{t}": float(r) for t, r in ranks.loc[label].items() if not math.isnan(r)}
        out[run_id] = {**values, "rank/mean": float(table.loc[label, "mean_rank"])}
    return out


def log_ranks(tracking_uri: str, ranks: Mapping[str, Mapping[str, float]]) -> None:
    """The rank metrics onto each ranked run (MLflow shows a metric's latest value: a newer
    leaderboard replaces an older one's)."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    stamp = int(time.time() * 1000)
    for run_id, values in ranks.items():
        log_metrics(client, run_id, values, stamp, step=0)


def leaderboard(
    tracking_uri: str,
    experiments: Sequence[str],
    out: Path,
    overrides: Mapping[str, str] | None = None,
    tasks: Sequence[str] = (),
    reference: str | None = None,
    log: bool = True,
) -> pd.DataFrame:
    """Build, save (md, csv, png) and optionally log the leaderboard; returns the table."""
    runs = fetch_runs(tracking_uri, experiments)
    metrics, unresolved = task_metrics(runs, overrides or {}, tasks)
    if unresolved and not metrics:
        raise GeneralistError(unresolved_hint(unresolved))
    if unresolved:
        print(f"left out: {unresolved_hint(unresolved)}", file=sys.stderr)
    if not metrics:
        raise GeneralistError(
            f"no eval/<task>/<metric> values in experiment(s) {list(experiments)} at "
            f"{tracking_uri}; run `generalist evaluate` (or train with eval.every) first"
        )
    table = build_table(runs, metrics)
    ref = reference_rows(metrics) if reference == "medpalm-m" else None
    if ref is not None and ref.isna().all().all():
        print(f"no Med-PaLM M value for {dict(metrics)}; reference rows left out", file=sys.stderr)
        ref = None
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(table, metrics, ref)
    (out / "leaderboard.md").write_text(markdown, encoding="utf-8")
    full = table if ref is None else __import__("pandas").concat([table, ref])
    full.to_csv(out / "leaderboard.csv", index_label="run")
    plot(table, metrics, out / "leaderboard.png", ref)
    print(markdown, end="")
    if log:
        tracker = Tracker(
            out / "mlflow_run",
            tracking_uri=tracking_uri,
            experiment=experiments[0],
            run_name="leaderboard",
            kind="leaderboard",
        )
        for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.png"):
            tracker.log_artifact(out / name)
        tracker.close()
        log_ranks(tracking_uri, rank_metrics(table, metrics))
    return table
