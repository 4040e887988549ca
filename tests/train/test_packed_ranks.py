"""2-rank DeepSpeed runs (ZeRO-2, ZeRO-3) packed give the unpacked run's losses over 20 steps
within 1e-4: one launch (tests/train/packed_ranks.py runs all four, in turn)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import deepspeed_runs as runs

HERE = Path(__file__).parent
pytestmark = pytest.mark.slow


def test_packed_two_ranks_follow_the_unpacked_losses(tiny_config) -> None:
    # image and text-only tasks; micro-batches of 4 whole examples, each packed into one row
    config = tiny_config(
        "packed.yaml",
        deepspeed=2,  # and 3: packed_ranks.py runs both
        tasks={"train_colors": 1.0, "train_lists": 1.0},
        schedule="iid",
        steps=20,
        **{"lora.enabled": True, "lora.dropout": 0.0, "optim.lr": 1e-2},
        **{"batch.micro_batch_size": 4, "batch.grad_accum": 2, "batch.group_by_length": 1},
        **{"batch.max_tokens": 512, "checkpoint.every": 0},
    )
    out = config.with_name("packed.json")
    log = config.with_suffix(".log")
    script = [str(HERE / "packed_ranks.py"), str(config), str(out)]
    runs.finish(runs.launch_command(script, log), log)
    for stage, result in json.loads(out.read_text()).items():
        unpacked, packed = result["unpacked"], result["packed"]
        assert (
            sorted(unpacked, key=int) == [str(s) for s in range(1, 21)]
            and packed.keys() == unpacked.keys()
        ), stage
        for step, loss in unpacked.items():
            assert packed[step] == pytest.approx(loss, rel=1e-4), (stage, step, packed, unpacked)
        assert unpacked["20"] < unpacked["1"] - 0.1  # it learns: the comparison is not of constants
        assert result["padding"]["packed"] < result["padding"]["unpacked"], stage
