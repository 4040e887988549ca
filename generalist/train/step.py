"""One optimizer step, top to bottom: from the loop's accumulation window to the loss handed to
engine.backward, then the meters rank 0 logs.

  train_window         the step: weights of the global batch, then per micro-batch: inputs on the
                       device, forward, per-example losses, scaled loss, backward, engine.step
  step_weights         how the step's loss is normalised over its global batch
  forward_losses       one micro-batch's forward and per-example token-loss sums
  micro_batch_loss     the loss of one micro-batch, scaled by the step's weights
  LossMeter            per-task losses, tokens/s and padding since the last log line
  data_metrics         each task's realized rate and the skipped bad samples

How the loss is normalised (`batch.loss_normalization`). The global batch of a step is every
micro-batch of the accumulation window on every rank.

  global_tokens  (default) the sum of token losses over the global batch divided by its number
                 of target tokens, exactly: every target token weighs the same, whichever
                 micro-batch or rank it fell in, so the mixture the user set is the mixture the
                 gradient sees (a one-word VQA answer does not outweigh a report's tokens)
  per_example    the mean over the global batch's examples (with at least one target token) of
                 each example's own token mean: every example weighs the same
  micro_batch    each micro-batch's own token mean, averaged over micro-batches and ranks by
                 DeepSpeed (the usual hand-written loop; kept to compare against)

The window's micro-batches are fetched before its first forward, so the target tokens (after the
label shift of decoder-only models) are counted up front and summed over ranks with one
all-reduce of two numbers. DeepSpeed 0.19 divides the loss handed to engine.backward by
gradient_accumulation_steps (`scale_wrt_gas`, on by default) and averages gradients over the
data-parallel ranks (ZeRO 0-3: divide by the world size, around the all-reduce with
gradient_predivide_factor, netting 1/world). `deepspeed_divisor` is that product; the loss is
multiplied by it, so what DeepSpeed sums is exactly sum(token losses) / global denominator.

A packed micro-batch (`batch.packing`, generalist.batching.packing) holds several examples per
row; its `example_index` says which, and forward_losses returns one loss sum per example all the
same, so everything below it is the same for packed and unpacked micro-batches.

The per-example cross-entropy itself is generalist.batching.losses' (evaluation scores options
with it, and evaluation comes before training in the stage order).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from generalist import distributed as dist
from generalist.batching.grouping import MicroBatch
from generalist.batching.losses import example_losses, shifts_labels
from generalist.batching.model_inputs import to_device
from generalist.batching.packing import packed_example_losses, packed_target_counts
from generalist.batching.padding import IGNORE_INDEX
from generalist.mixing.stream import MixtureStream
from generalist.train.config import LossNormalization

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine

PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # fp32: inputs stay as built


def train_window(
    engine: DeepSpeedEngine,
    window: Sequence[MicroBatch],
    normalization: LossNormalization,
    device: torch.device,
    precision: str,
    meter: LossMeter | None = None,
) -> None:
    """One optimizer step: forward and backward every micro-batch of the accumulation window,
    each loss scaled so that the update follows the global batch's normalised loss; DeepSpeed
    steps the optimizer at the window's last micro-batch (collective: every rank calls it)."""
    shift = shifts_labels(engine.module)
    weights = step_weights(normalization, [m.batch for m in window], shift, engine, device)
    for micro in window:
        inputs = batch_to_device(micro.batch, device, precision)
        sums, counts = forward_losses(engine, inputs, micro.batch.get("example_index"))
        engine.backward(micro_batch_loss(sums, counts, weights))
        engine.step()  # DeepSpeed steps the optimizer at the accumulation boundary only
        if meter is not None:
            meter.add(micro.batch, sums.detach(), counts)


def batch_to_device(batch: dict[str, Any], device: torch.device, precision: str) -> dict[str, Any]:
    """The model's tensors on `device`, floating inputs (pixels) in the training precision."""
    return to_device(batch, device, PRECISION_DTYPES.get(precision))


# -- the step's weights: how its loss is normalised over the global batch ------------------------


def target_counts(labels: torch.Tensor, shift: bool) -> torch.Tensor:
    """Target tokens per row, as the loss counts them (decoder-only: labels[:, 1:])."""
    if shift:
        labels = labels[:, 1:]
    return (labels != IGNORE_INDEX).sum(dim=1)


def example_target_counts(batch: dict[str, Any] | torch.Tensor, shift: bool) -> torch.Tensor:
    """Target tokens per example of a batch (or of its labels): per row, or per example of a
    packed batch."""
    if isinstance(batch, torch.Tensor):
        return target_counts(batch, shift)
    if "example_index" in batch:
        return packed_target_counts(batch["labels"], batch["example_index"], shift)
    return target_counts(batch["labels"], shift)


def deepspeed_divisor(engine: DeepSpeedEngine) -> float:
    """What DeepSpeed divides a backward loss by before the update: gradient accumulation steps
    times the data-parallel world size when gradients are averaged (the default "mean")."""
    divisor = float(engine.gradient_accumulation_steps())
    if getattr(engine, "gradient_average", True):
        divisor *= float(getattr(engine, "dp_world_size", dist.world_size()))
    return divisor


@dataclass(frozen=True)
class StepWeights:
    """How every micro-batch loss of one optimizer step is scaled.

    denominator: global target tokens (global_tokens) or global examples with targets
    (per_example); undo: deepspeed_divisor, multiplied back in. micro_batch uses neither.
    """

    mode: LossNormalization
    denominator: float = 1.0
    undo: float = 1.0


def step_weights(
    mode: LossNormalization,
    batches: Sequence[dict[str, Any] | torch.Tensor],
    shift: bool,
    engine: DeepSpeedEngine,
    device: torch.device,
) -> StepWeights:
    """The weights of one step from its micro-batches (or their labels) (collective: one
    all-reduce on every rank, except for micro_batch)."""
    if mode == "micro_batch":
        return StepWeights(mode)
    counts = torch.cat([example_target_counts(b, shift) for b in batches])
    local = [float(counts.sum()), float((counts > 0).sum())]
    totals = dist.all_reduce_sum(torch.tensor(local, dtype=torch.float64, device=device)).tolist()
    denominator = totals[0] if mode == "global_tokens" else totals[1]
    return StepWeights(mode, max(denominator, 1.0), deepspeed_divisor(engine))


# -- one micro-batch: forward, per-example losses, the scaled loss ------------------------------


def forward_losses(
    engine: DeepSpeedEngine | torch.nn.Module,
    inputs: dict[str, Any],
    example_index: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward one micro-batch: (per-example token-loss sums, with grad; target counts).
    A packed micro-batch's rows are split back into their examples by `example_index`."""
    labels = inputs.pop("labels")
    out = engine(**inputs)
    shift = shifts_labels(engine.module if hasattr(engine, "module") else engine)
    if example_index is not None:
        sums, counts = packed_example_losses(out.logits, labels, example_index, shift)
    else:
        sums, counts = example_losses(out.logits, labels, shift)
    return sums, counts.detach()


def micro_batch_loss(
    sums: torch.Tensor, counts: torch.Tensor, weights: StepWeights
) -> torch.Tensor:
    """The loss to hand to engine.backward for one micro-batch, from its per-example token-loss
    sums and target counts."""
    if weights.mode == "micro_batch":
        return sums.sum() / counts.sum().clamp(min=1)
    per_example = weights.mode == "per_example"  # an example without targets adds 0 there
    total = (sums / counts.clamp(min=1)).sum() if per_example else sums.sum()
    return total * (weights.undo / weights.denominator)


# -- what rank 0 logs ----------------------------------------------------------------------------


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
        real, positions = real_and_positions(batch)
        self.totals[3 * n] += real
        self.totals[3 * n + 1] += positions

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


def real_and_positions(batch: dict[str, Any]) -> tuple[float, float]:
    """(real tokens, positions computed) of a batch. A packed batch's attention mask is 4D
    (block-diagonal), so its real tokens are those of its examples (`real_tokens`)."""
    if "real_tokens" in batch:
        return float(batch["real_tokens"]), float(batch["input_ids"].numel())
    mask = batch["attention_mask"]
    return float(mask.sum()), float(mask.numel())


def data_metrics(stream: MixtureStream, skip_bad: bool, device: torch.device) -> dict[str, float]:
    """data/<task>/realized_rate, and data/skipped_samples with skip_bad (collective then:
    every rank calls it at the same steps)."""
    metrics = {f"data/{t}/realized_rate": r for t, r in stream.realized_rates().items()}
    if skip_bad:
        count = torch.tensor([float(stream.skipped)], dtype=torch.float64, device=device)
        metrics["data/skipped_samples"] = float(dist.all_reduce_sum(count).item())
    return metrics
