"""Run by test_deepspeed.py under `deepspeed --num_gpus 2 ds_ranks.py SHARD_ROOT OUT_JSON`: each
rank streams its batches."""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path

import deepspeed
import torch.distributed as dist

# A launched script runs outside pytest (whose `pythonpath` setting puts tests/ on sys.path):
# tests/ goes on sys.path here, so `support` imports as it does in the tests.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from support.stream_data import register


def main() -> None:
    # the launcher adds --local_rank=N to our arguments
    shard_root, out = (Path(a) for a in sys.argv[1:] if not a.startswith("--"))
    register()  # the st_* test datasets and tasks

    from generalist.catalog.loading import load_catalog
    from generalist.catalog.mixture import mixture_from_rates
    from generalist.mixing.stream import build_stream

    load_catalog()
    from generalist.distributed import skip_cpu_shm_op

    skip_cpu_shm_op()  # DeepSpeed's inference-only shm op would be compiled on a fresh machine
    deepspeed.init_distributed(dist_backend="gloo", verbose=False)
    mix = mixture_from_rates("m", {"st_task_many": 3.0, "st_task_few": 1.0}, min_per_batch=1)
    stream = build_stream(
        mix, shard_root, seed=2, rank=dist.get_rank(), world_size=dist.get_world_size(),
        batch_size=4, num_workers=2,
    )  # fmt: skip
    loader = stream.dataloader()
    batches = [[e.id for e in b] for b in itertools.islice(iter(loader), 6)]
    gathered: list = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, {"batches": batches, "state": loader.state_dict()})
    if dist.get_rank() == 0:
        out.write_text(json.dumps(gathered))
    dist.barrier()


if __name__ == "__main__":
    main()
