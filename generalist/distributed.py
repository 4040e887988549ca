"""Distributed helpers: a few free functions over torch.distributed as DeepSpeed sets it up.

`generalist train` works with or without a launcher: under `deepspeed` (or torchrun, SLURM via
launch/slurm.sbatch) the launcher sets RANK/WORLD_SIZE/LOCAL_RANK/MASTER_*; a bare
`generalist train` gets a one-rank world on a free local port.
"""

from __future__ import annotations

import os
import socket

import torch
import torch.distributed as dist


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_distributed() -> torch.device:
    """Start the process group (nccl on GPU, gloo on CPU) and return this rank's device."""
    import deepspeed

    if "RANK" not in os.environ:
        # No launcher: a world of one, so the same code path (and DeepSpeed) runs everywhere.
        os.environ.update(
            RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_SIZE="1", MASTER_ADDR="127.0.0.1"
        )
        os.environ.setdefault("MASTER_PORT", str(_free_port()))
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(local_rank())
    if not cuda:
        skip_cpu_shm_op()
    if not dist.is_initialized():
        deepspeed.init_distributed(dist_backend="nccl" if cuda else "gloo", verbose=False)
    return torch.device("cuda", local_rank()) if cuda else torch.device("cpu")


def skip_cpu_shm_op() -> None:
    """Keep DeepSpeed from probing and compiling its shared-memory all-reduce op on CPU.

    Starting a CPU process group, DeepSpeed probes every op builder (about 20 s) and compiles
    `deepspeed_shm_comm` (about 90 s on a fresh machine). Only `inference_all_reduce` (tensor-
    parallel inference) uses that op; training all-reduces over gloo, so it is never needed here.
    """
    import importlib

    # by module path: `import deepspeed.comm.torch as m` binds the torch package that
    # deepspeed.comm re-exports under that name
    backend = importlib.import_module("deepspeed.comm.torch")
    backend.build_shm_op = lambda: None


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else int(os.environ.get("WORLD_SIZE", 1))


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks in place (a no-op in a world of one) and return it."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def auto_precision(requested: str) -> str:
    """bf16 on a GPU that supports it, fp32 on CPU (CPU bf16 autocast is slow and lossy)."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp16" if torch.cuda.is_available() else "fp32"
