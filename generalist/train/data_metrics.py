"""The data metrics a training run logs beside its losses: each task's realized rate and, with
`skip_bad`, how many bad samples were replaced so far by every rank and DataLoader worker of
this process (a resumed run counts from its restart)."""

from __future__ import annotations

import torch

from generalist import distributed as dist
from generalist.mixing.stream import MixtureStream


def data_metrics(stream: MixtureStream, skip_bad: bool, device: torch.device) -> dict[str, float]:
    """data/<task>/realized_rate, and data/skipped_samples with skip_bad (collective then:
    every rank calls it at the same steps)."""
    metrics = {f"data/{t}/realized_rate": r for t, r in stream.realized_rates().items()}
    if skip_bad:
        count = torch.tensor([float(stream.skipped)], dtype=torch.float64, device=device)
        metrics["data/skipped_samples"] = float(dist.all_reduce_sum(count).item())
    return metrics
