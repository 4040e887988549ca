"""Plots of a run's local records (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from generalist.tracking.run_records import read_metrics


def plot_training_curve(runs: Mapping[str, Path], path: Path, title: str = "") -> None:
    """Training loss per task over consecutive stages (from each run's metrics.jsonl); the first
    stage solid, later ones dashed, a grey line where each ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    first = next(iter(runs), None)
    offset = 0
    for stage, run_dir in runs.items():
        rows = [r for r in read_metrics(run_dir) if "train/loss" in r]
        steps = [offset + r["step"] for r in rows]
        task_keys = sorted(k for k in rows[-1] if k.endswith("/loss") and k.count("/") == 2)
        for key in ["train/loss", *task_keys]:
            label = key.split("/")[1] if key.count("/") == 2 else "all tasks"
            ax.plot(
                steps,
                [r.get(key) for r in rows],
                label=f"{stage}: {label}",
                linestyle="-" if stage == first else "--",
            )
        offset = steps[-1] if steps else offset
        ax.axvline(offset, color="grey", linewidth=0.5)
    ax.set_xlabel("step")
    ax.set_ylabel("train loss")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    ax.set_title(title or "training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
