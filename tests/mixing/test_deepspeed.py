"""The stream under the deepspeed launcher (2 CPU ranks over gloo, 2 dataloader workers each)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from generalist.catalog.mixture import mixture_from_rates
from generalist.mixing.stream import build_stream

from support.deepspeed_runs import free_port

HERE = Path(__file__).parent


@pytest.mark.slow
def test_two_deepspeed_ranks_read_disjoint_data_and_agree_on_state(
    shard_root: Path, tmp_path: Path
) -> None:
    launcher = shutil.which("deepspeed", path=str(Path(sys.executable).parent))
    assert launcher, "deepspeed launcher not found next to the interpreter"
    out = tmp_path / "ranks.json"
    command = [
        launcher, "--num_gpus", "2", "--master_port", str(free_port()), str(HERE / "ds_ranks.py"),
        str(shard_root), str(out),
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ranks = json.loads(out.read_text())
    assert ranks[0]["state"] == ranks[1]["state"]  # any rank's state restores every rank
    ids = [[i for b in r["batches"] for i in b] for r in ranks]
    assert not set(ids[0]) & set(ids[1])
    # the launcher changes nothing: the same as building rank r in this process
    mix = mixture_from_rates("m", {"st_task_many": 3.0, "st_task_few": 1.0}, min_per_batch=1)
    for rank in range(2):
        stream = build_stream(
            mix, shard_root, seed=2, rank=rank, world_size=2, batch_size=4, num_workers=2
        )
        local = [[e.id for e in b] for b in itertools.islice(iter(stream.dataloader()), 6)]
        assert local == ranks[rank]["batches"]
