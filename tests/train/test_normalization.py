"""Loss normalisation over the global batch (generalist.train.step): the arithmetic on
one process, and a 2-rank DeepSpeed step with gradient accumulation 4 and uneven target lengths
whose update equals the gradient of one big batch."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from generalist.train.step import (
    deepspeed_divisor,
    micro_batch_loss,
    step_weights,
    target_counts,
)

from support import deepspeed_runs as runs

HERE = Path(__file__).parent


def _engine(gas: int, world: int) -> SimpleNamespace:
    return SimpleNamespace(
        gradient_accumulation_steps=lambda: gas, dp_world_size=world, gradient_average=True
    )


def test_target_counts_follow_the_label_shift() -> None:
    labels = torch.tensor([[5, -100, 3, 4], [-100, -100, -100, 7]])
    assert target_counts(labels, shift=True).tolist() == [2, 1]  # labels[:, 1:]
    assert target_counts(labels, shift=False).tolist() == [3, 1]


def test_scaled_micro_batch_losses_add_up_to_the_global_normalisation() -> None:
    """What DeepSpeed applies (the sum of the scaled losses over its divisor) is the token mean
    (or the example mean) of the whole window, not the mean of micro-batch means."""
    engine = _engine(gas=2, world=1)
    assert deepspeed_divisor(engine) == 2 and deepspeed_divisor(_engine(4, 2)) == 8
    no_average = SimpleNamespace(gradient_accumulation_steps=lambda: 4, gradient_average=False)
    assert deepspeed_divisor(no_average) == 4
    # micro-batch 1: two examples with 1 and 3 targets; micro-batch 2: one example with 8
    labels = [torch.tensor([[0, 1, -100, -100], [0, 1, 1, 1]]), torch.tensor([[0] + [1] * 8])]
    sums = [torch.tensor([2.0, 6.0]), torch.tensor([40.0])]
    counts = [torch.tensor([1, 3]), torch.tensor([8])]
    cpu = torch.device("cpu")
    expected = {"global_tokens": 48 / 12, "per_example": (2 / 1 + 6 / 3 + 40 / 8) / 3}
    expected["micro_batch"] = (8 / 4 + 40 / 8) / 2
    for mode, value in expected.items():
        weights = step_weights(mode, labels, True, engine, cpu)
        losses = [micro_batch_loss(s, c, weights) for s, c in zip(sums, counts)]
        applied = sum(float(x) for x in losses) / deepspeed_divisor(engine)
        assert applied == pytest.approx(value), mode
    assert expected["global_tokens"] != pytest.approx(expected["micro_batch"])


@pytest.mark.slow
def test_two_ranks_grad_accum_4_uneven_lengths_equal_one_big_batch(tiny_config) -> None:
    # one image task and one whose answers have 1-6 words; no LoRA: every weight is compared
    config = tiny_config(
        "norm.yaml",
        tasks={"train_colors": 1.0, "train_lists": 1.0},
        **{"batch.micro_batch_size": 2, "batch.grad_accum": 4, "batch.group_by_length": 2},
        **{"optim.grad_clip": 0.0, "steps": 1},
    )
    out = config.with_name("norm.json")
    log = config.with_suffix(".log")
    script = [str(HERE / "norm_ranks.py"), str(config), str(out)]
    path = os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])  # norm_ranks imports
    runs.finish(runs.launch_command(script, log, PYTHONPATH=path), log)
    result = json.loads(out.read_text())
    assert len(result["targets"]) == 8 and len(set(result["targets"])) > 2  # uneven lengths
    # the default and per_example: exactly their normalisation over all 16 examples
    assert result["global_tokens"]["vs_own"] < 1e-4, result
    assert result["per_example"]["vs_own"] < 1e-4, result
    # the old micro-batch mean is what DeepSpeed alone gives, and it is not the global mean
    assert result["micro_batch"]["vs_own"] < 1e-4, result
    assert result["micro_batch"]["vs_global"] > 100 * result["global_tokens"]["vs_own"], result
    assert result["micro_batch"]["vs_global"] > 1e-2, result
