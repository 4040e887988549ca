"""`generalist leaderboard`: rank MLflow runs task by task on each task's primary metric.

    generalist leaderboard [--tracking-uri URI] [--experiment NAME ...] [--metric TASK=METRIC ...]
                           [--tasks TASK ...] [--out DIR] [--reference medpalm-m] [--no-log]

Reads the latest `eval/<task>/<metric>` of every run in the experiments (runs tagged
`generalist.kind=leaderboard` are skipped), builds a runs x tasks table of each task's primary
metric (`Task.primary_metric`, or the one given by --metric), ranks the runs per task (1 = best,
ties share the average rank, a run without the task is not ranked on it) and sorts by the mean
rank over the tasks each run has. Prints it, writes leaderboard.md, leaderboard.csv and
leaderboard.png under --out, and logs them to a `leaderboard` run of the first experiment.

--reference medpalm-m adds unranked rows with the Med-PaLM M 12B/84B/562B numbers of
arXiv 2307.14334 (v1): Table 3 (per model size; Table 2 prints only the best of the three),
converted from percent to fractions. Only tasks whose metric the paper reports get a value.
They are a reference point, not a comparison: the paper's models, data and splits differ.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from generalist.catalog import load_catalog
from generalist.errors import GeneralistError
from generalist.task import TASKS
from generalist.tasks_cli import add_import_argument
from generalist.tracking import Tracker, default_tracking_uri, is_remote, server_answers

LEADERBOARD_TAG = "generalist.kind"

# Med-PaLM M (arXiv 2307.14334 v1) Table 3, percent, (12B, 84B, 562B). VQA "F1" is taken to be
# the token F1; the MIMIC-CXR classification row is the 5-condition task.
MEDPALM_M: dict[str, dict[str, tuple[float, float, float]]] = {
    "medqa": {"accuracy": (29.22, 46.11, 69.68)},
    "medmcqa": {"accuracy": (32.20, 47.60, 62.59)},
    "pubmedqa": {"accuracy": (48.60, 71.40, 80.00)},
    "mimic_iii_summarization": {"rouge_l": (29.45, 31.47, 32.03), "bleu": (12.14, 15.36, 15.21)},
    "vqa_rad": {"bleu1": (64.02, 69.38, 71.27), "token_f1": (50.66, 59.90, 62.06)},
    "slake_vqa": {"bleu1": (90.77, 92.70, 91.64), "token_f1": (86.22, 89.28, 87.50)},
    "path_vqa": {"bleu1": (68.97, 70.16, 72.27), "token_f1": (57.24, 59.51, 62.69)},
    "mimic_cxr_report": {
        "bleu1": (30.90, 32.31, 31.73),
        "bleu4": (10.43, 11.31, 11.50),
        "rouge_l": (26.16, 27.29, 27.49),
        "cider_d": (23.43, 26.17, 25.27),
    },
    "mimic_cxr_classification": {
        "macro_auc": (76.67, 78.35, 79.09),
        "macro_f1": (38.33, 36.83, 41.57),
    },
    "pad_ufes_20": {"macro_auc": (95.57, 97.27, 96.08), "macro_f1": (78.42, 84.32, 77.03)},
    "vindr_mammo": {"macro_auc": (66.29, 71.76, 71.42), "macro_f1": (29.81, 35.70, 33.90)},
    "cbis_ddsm_mass": {"macro_auc": (70.11, 73.09, 73.31), "macro_f1": (47.23, 49.98, 51.12)},
    "cbis_ddsm_calc": {"macro_auc": (81.40, 82.22, 80.90), "macro_f1": (67.86, 63.81, 63.03)},
}
MEDPALM_SIZES = ("12B", "84B", "562B")


def parse_metric_overrides(items: Sequence[str]) -> dict[str, str]:
    """["task=metric", ...] -> {task: metric}."""
    out = {}
    for item in items:
        task, sep, metric = item.partition("=")
        if not sep or not task or not metric:
            raise GeneralistError(f"--metric {item!r}: write TASK=METRIC, e.g. vqa_rad=token_f1")
        out[task] = metric
    return out


def fetch_runs(tracking_uri: str, experiments: Sequence[str]) -> list[dict[str, Any]]:
    """[{"name", "run_id", "metrics"}] of the runs in `experiments` (leaderboard runs skipped)."""
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
        if run.data.tags.get(LEADERBOARD_TAG) == "leaderboard":
            continue
        runs.append(
            {"name": run.info.run_name, "run_id": run.info.run_id, "metrics": run.data.metrics}
        )
    return runs


def task_metrics(
    runs: Sequence[Mapping[str, Any]], overrides: Mapping[str, str], only: Sequence[str] = ()
) -> dict[str, str]:
    """{task: metric} for every task some run has an `eval/<task>/<metric>` for."""
    seen = set()
    for run in runs:
        for key in run["metrics"]:
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == "eval":
                seen.add(parts[1])
    chosen = {}
    for task in sorted(seen if not only else set(only)):
        if task in overrides:
            chosen[task] = overrides[task]
        elif task in TASKS:
            chosen[task] = TASKS.get(task).primary_metric
    for task in overrides:
        if task not in chosen and (not only or task in only):
            chosen[task] = overrides[task]
    return chosen


def build_table(runs: Sequence[Mapping[str, Any]], metrics: Mapping[str, str]) -> Any:
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
    return table.sort_values(["mean_rank", "tasks_ranked"], ascending=[True, False])


def reference_rows(metrics: Mapping[str, str]) -> Any:
    """Med-PaLM M rows (fractions) for the tasks and metrics of the table; NaN where absent."""
    import pandas as pd

    rows = {}
    for i, size in enumerate(MEDPALM_SIZES):
        rows[f"Med-PaLM M {size} (paper)"] = {
            t: MEDPALM_M.get(t, {}).get(m, (math.nan,) * 3)[i] / 100.0 for t, m in metrics.items()
        }
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(metrics), dtype=float)


def to_markdown(table: Any, metrics: Mapping[str, str], reference: Any = None) -> str:
    """A markdown table (own code: five lines instead of a `tabulate` dependency)."""
    heads = ["run"] + [f"{t} ({m})" for t, m in metrics.items()] + ["mean rank"]
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]

    def fmt(v: float) -> str:
        return "-" if v != v else f"{v:.4f}"  # NaN != NaN

    for label, row in table.iterrows():
        cells = [fmt(row[t]) for t in metrics] + [f"{row['mean_rank']:.2f}"]
        lines.append("| " + " | ".join([str(label), *cells]) + " |")
    if reference is not None:
        for label, row in reference.iterrows():
            cells = [fmt(row[t]) for t in metrics] + ["(reference)"]
            lines.append("| " + " | ".join([str(label), *cells]) + " |")
    return "\n".join(lines) + "\n"


def plot(table: Any, metrics: Mapping[str, str], path: Path, reference: Any = None) -> None:
    """Grouped bars: one group per task, one bar per run (reference rows hatched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = [(str(label), row, False) for label, row in table.iterrows()]
    if reference is not None:
        rows += [(str(label), row, True) for label, row in reference.iterrows()]
    tasks = list(metrics)
    width = 0.8 / max(1, len(rows))
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks) + 2), 4.5))
    x = np.arange(len(tasks))
    for i, (label, row, is_ref) in enumerate(rows):
        values = [row[t] for t in tasks]
        ax.bar(x + i * width, values, width, label=label, hatch="//" if is_ref else None)
    ax.set_xticks(x + width * (len(rows) - 1) / 2)
    ax.set_xticklabels([f"{t}\n{m}" for t, m in metrics.items()], fontsize=8)
    ax.set_ylabel("primary metric")
    ax.set_title("generalist leaderboard (runs in order of mean rank)")
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def leaderboard(
    tracking_uri: str,
    experiments: Sequence[str],
    out: Path,
    overrides: Mapping[str, str] | None = None,
    tasks: Sequence[str] = (),
    reference: str | None = None,
    log: bool = True,
) -> Any:
    """Build, save (md, csv, png) and optionally log the leaderboard; returns the table."""
    runs = fetch_runs(tracking_uri, experiments)
    metrics = task_metrics(runs, overrides or {}, tasks)
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
            tags={LEADERBOARD_TAG: "leaderboard"},
        )
        for name in ("leaderboard.md", "leaderboard.csv", "leaderboard.png"):
            tracker.log_artifact(out / name)
        tracker.close()
    return table


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
