"""`generalist train` on each config given, in turn, in one launched process: one DeepSpeed
launch trains several tiny models (the launch, not the steps, is the cost of such a test).

As a script: `deepspeed --num_gpus 2 --no_local_rank train_in_turn.py CFG...`. As a module (the
family tests load it by path): `zero3_in_turn` writes the configs and runs that launch."""

from __future__ import annotations

import sys
from pathlib import Path

from generalist.cli import main

HERE = Path(__file__).parent


def _load_by_path(path: Path):
    """A test helper module by path (pytest's importlib mode puts no test dir on sys.path)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_helper_in_turn_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def zero3_in_turn(tmp_path: Path, models: dict[str, dict], steps: int, max_length: int, tag: str):
    """Train each of `models` (name -> the config's `model:` section) for `steps` steps under
    `deepspeed --num_gpus 2`, ZeRO-3 + LoRA, one after the other in one launch, on the tiny
    tasks' shards with the iid schedule (stratified would mix every micro-batch): micro-batches
    mix image and text-only examples and at some steps one rank's is text only (checked on the
    first config). Returns (runs: tests/train/test_runs.py, {name: config path})."""
    import subprocess

    import yaml

    from generalist.catalog.loading import import_user_module
    from generalist.shards.writer import write_dataset

    conftest = _load_by_path(HERE.parent / "train" / "conftest.py")
    runs = _load_by_path(HERE.parent / "train" / "test_runs.py")
    import_user_module(str(conftest.TINY_TASKS))
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
        cfg = conftest._tiny_config(shards, config.with_suffix(""), **overrides)
        config.write_text(yaml.safe_dump(cfg))
        configs[name] = config
    assert runs._modality_mix(next(iter(configs.values())))  # the scenario really happens
    cmd = [runs.DEEPSPEED, "--num_gpus", "2", "--master_port", str(runs._port())]
    cmd += ["--no_local_rank", str(Path(__file__).resolve())]
    env = {**runs.os.environ, "PATH": f"{Path(sys.executable).parent}:{runs.os.environ['PATH']}"}
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
