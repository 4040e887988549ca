"""The leaderboard as people read it: a markdown table and a grouped bar chart (matplotlib)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


def to_markdown(
    table: pd.DataFrame, metrics: Mapping[str, str], reference: pd.DataFrame | None = None
) -> str:
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


def plot(
    table: pd.DataFrame,
    metrics: Mapping[str, str],
    path: Path,
    reference: pd.DataFrame | None = None,
) -> None:
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
