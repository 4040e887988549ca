"""`generalist train` on each config given, in turn, in one launched process: one DeepSpeed
launch trains several tiny models (the launch, not the steps, is the cost of such a test).

As a script: `deepspeed --num_gpus 2 --no_local_rank train_in_turn.py CFG...` (it imports only
the package). As a module (`from support.train_in_turn import zero3_in_turn`, the family tests):
`zero3_in_turn` writes the configs and runs that launch."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NamedTuple

from generalist.cli import main


class Turn(NamedTuple):
    """One `generalist train` of a launch: the config's `model:` section, steps, max_length."""

    model: dict
    steps: int
    max_length: int


def zero3_in_turn(tmp_path: Path, turns: dict[str, Turn], tag: str):
    """Train each of `turns` under `deepspeed --num_gpus 2`, ZeRO-3 + LoRA, one after the other
    in one launch, on the tiny tasks' shards with the iid schedule (stratified would mix every
    micro-batch): micro-batches mix image and text-only examples and at some steps one rank's is
    text only (checked on the first config). Returns (runs: support.deepspeed_runs,
    {name: config path})."""

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
    for name, turn in turns.items():
        config = tmp_path / f"{tag}_{name}.yaml"
        overrides = {
            **runs.LORA,
            "model": turn.model,
            "deepspeed": 3,
            "schedule": "iid",
            "batch.group_by_length": 0,
            "batch.max_length": turn.max_length,
            "steps": turn.steps,
            "checkpoint.every": turn.steps,
        }
        cfg = tiny_config_dict(shards, config.with_suffix(""), **overrides)
        config.write_text(yaml.safe_dump(cfg))
        configs[name] = config
    assert runs.modality_mix(next(iter(configs.values())))  # the scenario really happens
    log = tmp_path / f"{tag}.log"
    script = ["--no_local_rank", str(Path(__file__).resolve()), *map(str, configs.values())]
    runs.finish(runs.launch_command(script, log), log)
    return runs, configs


if __name__ == "__main__":
    for config in sys.argv[1:]:
        code = main(["train", config])
        if code:
            sys.exit(code)
