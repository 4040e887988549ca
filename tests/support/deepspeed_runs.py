"""Launching ranks from a test: a free port, `deepspeed --num_gpus 2` runs of `generalist train`
in their own process group, and what such a run wrote (losses, the scenario it covers)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

DEEPSPEED = str(Path(sys.executable).parent / "deepspeed")
TIMEOUT = 300
# LoRA (with dropout: resume must restore the RNG exactly) on a from-scratch tiny model; the
# higher lr lets LoRA + the trained projector move the loss within 12 steps.
LORA = {"lora.enabled": True, "optim.lr": 1e-2}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_env(**extra: str) -> dict[str, str]:
    """The environment of a launch: this venv's bin first (the launcher starts `python`), one
    thread a rank (two ranks on two cores)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return env | {"OMP_NUM_THREADS": "1"} | extra


def launch_command(args: list[str], log: Path, ranks: int = 2, **env: str) -> subprocess.Popen:
    """`deepspeed --num_gpus 2 ARGS...` in its own process group, output to `log`."""
    cmd = [DEEPSPEED, "--num_gpus", str(ranks), "--master_port", str(free_port()), *args]
    out = open(log, "w")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, env=launch_env(**env), start_new_session=True
    )


def launch(config: Path, *overrides: str, ranks: int = 2) -> subprocess.Popen:
    """`deepspeed --num_gpus 2 --module generalist.cli train CONFIG ...`, own process group."""
    args = ["--module", "generalist.cli", "train", str(config), *overrides]
    return launch_command(args, config.with_suffix(".log"), ranks)


def launch_two_nodes(config: Path, tmp: Path) -> list[subprocess.Popen]:
    """Two DeepSpeed launchers on this machine as two nodes of one CPU rank each, exactly as
    launch/multi_node.sh or SLURM start them on a cluster (--no_ssh: each node starts its own)."""
    hostfile = tmp / "hostfile"
    hostfile.write_text("node0 slots=1\nnode1 slots=1\n")
    port = str(free_port())
    env = launch_env()
    procs = []
    for node in (0, 1):
        cmd = [DEEPSPEED, "--hostfile", str(hostfile), "--no_ssh", "--node_rank", str(node)]
        cmd += ["--num_nodes", "2", "--num_gpus", "1", "--master_addr", "127.0.0.1"]
        cmd += ["--master_port", port, "--module", "generalist.cli", "train", str(config)]
        log = open(config.with_suffix(f".node{node}.log"), "w")  # noqa: SIM115 - with the process
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env,
                                      start_new_session=True))  # fmt: skip
    return procs


def finish(proc: subprocess.Popen, config: Path) -> None:
    try:
        rc = proc.wait(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    log = config.with_suffix(".log").read_text()
    assert rc == 0, log[-4000:]
    # training on CPU never compiles DeepSpeed's inference-only shm op (90 s on a fresh machine)
    assert "shm_comm_op built" not in log


def losses(out: Path) -> dict[int, float]:
    """step -> train/loss (the last line per step winning, should a step be there twice)."""
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line]
    return {row["step"]: row["train/loss"] for row in rows}


def falls(curve: dict[int, float]) -> bool:
    values = [curve[s] for s in sorted(curve)]
    return sum(values[-3:]) / 3 < sum(values[:3]) / 3 - 0.1


def modality_mix(config: Path) -> bool:
    """True when, in the first 12 steps of this config's streams, some micro-batch mixes image
    and text-only examples and at some step one rank's micro-batch is text only."""
    from generalist.mixing.stream import build_stream
    from generalist.train.config import load_config
    from generalist.train.preflight import check_config

    cfg = load_config(config)
    mixture = check_config(cfg)
    micro = cfg.batch.micro_batch_size
    kinds = []
    for rank in (0, 1):
        stream = build_stream(
            mixture, cfg.shards, "train", cfg.seed, rank, 2, batch_size=micro, schedule=cfg.schedule
        )
        batches = iter(stream.dataloader(collate_fn=list))
        kinds.append([{bool(e.images) for e in next(batches)} for _ in range(cfg.steps)])
    mixed = any(k == {True, False} for rank in kinds for k in rank)
    differ = any(
        (a == {False} and True in b) or (b == {False} and True in a) for a, b in zip(*kinds)
    )
    return mixed and differ
