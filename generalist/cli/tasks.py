"""`generalist tasks`: every registered task (and mixture, and dataset option), as a table or
JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from generalist.catalog.loading import load_catalog
from generalist.catalog.mixture import MIXTURES
from generalist.catalog.records import DATASETS
from generalist.catalog.task import TASKS, Task
from generalist.cli.options import add_import_argument


def task_row(task: Task) -> dict[str, object]:
    return {
        "name": task.name,
        "kind": task.kind,
        "dataset": task.dataset,
        "metrics": list(task.metrics),
        "primary_metric": task.primary_metric,
        "templates": len(task.instructions),
        "shots": task.shots,
        "exemplar_images": task.exemplar_images,
        "labels": list(task.labels),
        "train": task.train_split is not None,
        "description": task.description,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="generalist tasks", description=__doc__)
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_import_argument(parser)
    args = parser.parse_args(argv)
    load_catalog(args.imports)
    tasks = [task_row(t) for t in TASKS]
    mixtures = [
        {"name": m.name, "rates": m.rates(), "min_per_batch": m.min_per_batch, "notes": m.notes}
        for m in MIXTURES
    ]
    # What `generalist shard DATASET --option NAME=VALUE` accepts.
    options = {d.name: dict(d.options) for d in DATASETS if d.options}
    if args.json:
        listing = {"tasks": tasks, "mixtures": mixtures, "dataset_options": options}
        print(json.dumps(listing, indent=2))
        return 0
    header = ("name", "kind", "dataset", "metrics", "templates", "shots")
    rows = [header] + [
        (
            t["name"],
            t["kind"],
            t["dataset"] + ("" if t["train"] else " (eval only)"),
            ",".join(t["metrics"]),
            str(t["templates"]),
            str(t["shots"]),
        )
        for t in tasks
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"\n{len(tasks)} tasks. Mixtures:")
    for m in mixtures:
        rates = ", ".join(f"{t} {r:.2%}" for t, r in m["rates"].items())
        print(f"  {m['name']}: {rates}")
    print("\nDataset options (generalist shard DATASET --option NAME=VALUE):")
    for dataset, declared in options.items():
        for name, help_text in declared.items():
            print(f"  {dataset} {name}: {help_text}")
    return 0
