"""`generalist train` on each config given, in turn, in one launched process: one DeepSpeed
launch trains several tiny models (the launch, not the steps, is the cost of such a test).

As a script: `deepspeed --num_gpus 2 --no_local_rank train_in_turn.py CFG...` (it imports only
the package). As a module (`from support.train_in_turn import zero3_in_turn`, the family tests):
`zero3_in_turn` writes the configs and runs that launch."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from generalist.cli import main


def zero3_in_turn(tmp_path: Path, models: dict[str, dict], steps: int, max_length: int, tag: str):
    """Train each of `models` (name -> the config's `model:` section) for `steps` steps under
    `deepspeed --num_gpus 2`, ZeRO-3 + LoRA, one after the other in one launch, on the tiny
    tasks' shards with the iid schedule (stratified would mix every micro-batch): micro-batches
    mix image and text-only examples and at some steps one rank's is text only (checked on the
    first config). Returns (runs: support.deepspeed_runs, {name: config path})."""
    import subprocess

    import yaml

    from generalist.catalog.loading import import_user_module
    from generalist.shards.writer import write_dataset

    from support import TINY_TASKS
    from support import deepspeed_runs as runs
    from support.train_config import tiny_config_dict

    import_user_module(str(TINY_TASKS))
    shards = tmp_path / "shards"
    shards.mkdir()
    for dataset in ("train_colors", "train_words"):
        write_dataset(dataset, shards, shards, shard_size=10, image_size=32, progress=False)
    configs = {}
    for name, model in models.items():
        config = tmp_path / f"{tag}_{name}.yaml"
        overrides = {
            **runs.LORA,
            "model": model,
            "deepspeed": 3,
            "schedule": "iid",
            "batch.group_by_length": 0,
            "batch.max_length": max_length,
            "steps": steps,
            "checkpoint.every": steps,
        }
        cfg = tiny_config_dict(shards, config.with_suffix(""), **overrides)
        config.write_text(yaml.safe_dump(cfg))
        configs[name] = config
    assert runs.modality_mix(next(iter(configs.values())))  # the scenario really happens
    cmd = [runs.DEEPSPEED, "--num_gpus", "2", "--master_port", str(runs.free_port())]
    cmd += ["--no_local_rank", str(Path(__file__).resolve())]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env["OMP_NUM_THREADS"] = "1"
    log = tmp_path / f"{tag}.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*cmd, *map(str, configs.values())],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        runs.finish(proc, log)
    return runs, configs


if __name__ == "__main__":
    for config in sys.argv[1:]:
        code = main(["train", config])
        if code:
            sys.exit(code)
