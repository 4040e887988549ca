"""The pieces of one training step: inputs on the device, the forward with its per-example
losses, one optimizer step over its accumulation window (loss normalised over the global batch,
generalist.train.normalization), the per-task loss/throughput meter that rank 0 logs, and a
phase timer for the bench."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import torch

from generalist import distributed as dist
from generalist.batching.losses import example_losses, shifts_labels
from generalist.batching.model_inputs import to_device
from generalist.train.normalization import LossNormalization, micro_batch_loss, step_weights

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine

PHASES = ("data", "forward", "backward", "optimizer")
Window = Sequence[tuple[dict[str, Any], dict[str, Any]]]  # (data position, batch) per micro-batch

PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # fp32: inputs stay as built


def batch_to_device(batch: dict[str, Any], device: torch.device, precision: str) -> dict[str, Any]:
    """The model's tensors on `device`, floating inputs (pixels) in the training precision."""
    return to_device(batch, device, PRECISION_DTYPES.get(precision))


def forward_losses(
    engine: DeepSpeedEngine, inputs: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward one micro-batch: (per-example token-loss sums, with grad; target counts)."""
    labels = inputs.pop("labels")
    out = engine(**inputs)
    sums, counts = example_losses(out.logits, labels, shifts_labels(engine.module))
    return sums, counts.detach()


class PhaseTimer:
    """Seconds spent in each phase of training steps (data, forward, backward, optimizer).

    The device is synchronised at each phase boundary so that asynchronous CUDA work is counted
    in the phase that queued it; that costs a little, so only the bench times phases.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = dict.fromkeys(PHASES, 0.0)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.seconds[name] += time.perf_counter() - start


def train_window(
    engine: DeepSpeedEngine,
    window: Window,
    normalization: LossNormalization,
    device: torch.device,
    precision: str,
    meter: LossMeter | None = None,
    timer: PhaseTimer | None = None,
) -> None:
    """One optimizer step: forward and backward every micro-batch of the accumulation window,
    each loss scaled so that the update follows the global batch's normalised loss; DeepSpeed
    steps the optimizer at the window's last micro-batch (collective: every rank calls it)."""

    def phase(name: str) -> AbstractContextManager[None]:
        return timer.phase(name) if timer is not None else nullcontext()

    shift = shifts_labels(engine.module)
    labels = [batch["labels"] for _, batch in window]
    with phase("data"):
        weights = step_weights(normalization, labels, shift, engine, device)
    for _, batch in window:
        with phase("data"):
            inputs = batch_to_device(batch, device, precision)
        with phase("forward"):
            sums, counts = forward_losses(engine, inputs)
            loss = micro_batch_loss(sums, counts, weights)
        with phase("backward"):
            engine.backward(loss)
        with phase("optimizer"):
            engine.step()  # DeepSpeed steps the optimizer at the accumulation boundary only
        if meter is not None:
            meter.add(batch, sums.detach(), counts)


class LossMeter:
    """Per-task loss sums, token and example counts since the last summary, and the clock.

    summary() is collective (one all-reduce of a small tensor), so every rank calls it at the
    same steps; the losses are token-weighted over all ranks and micro-batches.
    """

    def __init__(self, tasks: Sequence[str], device: torch.device) -> None:
        self.tasks = list(tasks)
        self.device = device
        n = len(self.tasks)
        # rows: loss sum, target tokens, examples (per task); then real tokens, all positions
        self.totals = torch.zeros(3 * n + 2, dtype=torch.float64, device=device)
        self.restart_clock()

    def restart_clock(self) -> None:
        self.start = time.perf_counter()

    def add(self, batch: dict[str, Any], sums: torch.Tensor, counts: torch.Tensor) -> None:
        n = len(self.tasks)
        index = torch.tensor([self.tasks.index(t) for t in batch["task_names"]], device=self.device)
        self.totals[:n].index_add_(0, index, sums.to(self.totals))
        self.totals[n : 2 * n].index_add_(0, index, counts.to(self.totals))
        self.totals[2 * n : 3 * n].index_add_(0, index, torch.ones_like(index, dtype=torch.float64))
        mask = batch["attention_mask"]
        self.totals[3 * n] += float(mask.sum())
        self.totals[3 * n + 1] += float(mask.numel())

    def summary(self, lr: float) -> dict[str, float]:
        """Metrics since the last summary, over all ranks; then resets."""
        totals = dist.all_reduce_sum(self.totals.clone()).cpu().tolist()
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        n = len(self.tasks)
        sums, tokens = totals[:n], totals[n : 2 * n]
        real, positions = totals[3 * n], totals[3 * n + 1]
        metrics = {
            "train/loss": sum(sums) / max(sum(tokens), 1.0),
            "train/lr": float(lr),
            "train/tokens_per_s": real / elapsed,
            "train/padding_fraction": 1.0 - real / max(positions, 1.0),
        }
        for i, task in enumerate(self.tasks):
            if tokens[i]:
                metrics[f"train/{task}/loss"] = sums[i] / tokens[i]
        if self.device.type == "cuda":  # this rank's high-water mark since the run started
            metrics["train/peak_memory_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        self.totals.zero_()
        self.restart_clock()
        return metrics
