"""How one optimizer step's loss is normalised over its global batch (`batch.loss_normalization`).

The global batch of a step is every micro-batch of the accumulation window on every rank.

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
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from generalist import distributed as dist
from generalist.batching.padding import IGNORE_INDEX
from generalist.train.config import LossNormalization

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine


def target_counts(labels: torch.Tensor, shift: bool) -> torch.Tensor:
    """Target tokens per example, as the loss counts them (decoder-only: labels[:, 1:])."""
    if shift:
        labels = labels[:, 1:]
    return (labels != IGNORE_INDEX).sum(dim=1)


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
    labels: Sequence[torch.Tensor],
    shift: bool,
    engine: DeepSpeedEngine,
    device: torch.device,
) -> StepWeights:
    """The weights of one step from its micro-batches' labels (collective: one all-reduce on
    every rank, except for micro_batch)."""
    if mode == "micro_batch":
        return StepWeights(mode)
    counts = torch.cat([target_counts(x, shift) for x in labels])
    local = [float(counts.sum()), float((counts > 0).sum())]
    totals = dist.all_reduce_sum(torch.tensor(local, dtype=torch.float64, device=device)).tolist()
    denominator = totals[0] if mode == "global_tokens" else totals[1]
    return StepWeights(mode, max(denominator, 1.0), deepspeed_divisor(engine))


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
