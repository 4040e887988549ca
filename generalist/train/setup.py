"""The setup functions of a training run, each called once by generalist.train.loop: the torch
backends (TF32), the model (built on every rank, rank 0 first), the DeepSpeed engine with its
optimizer and schedule, this rank's data (stream and length-grouped micro-batches) and rank 0's
tracker. Before the first step, setup_data runs the token-mask preflight
(generalist.train.mask_preflight) through the run's collator."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import deepspeed
import torch
from transformers import get_scheduler

from generalist import distributed as dist
from generalist.batching.collate import Collator
from generalist.batching.grouping import MicroBatch, grouped_batches
from generalist.batching.packing import check_packable
from generalist.catalog.mixture import Mixture
from generalist.catalog.task import TASKS
from generalist.mixing.stream import MixtureStream, build_stream
from generalist.model.build import build_model
from generalist.model.bundle import ModelBundle
from generalist.shards.manifest import split_shards
from generalist.shards.reader import iter_shard
from generalist.train.config import TrainConfig
from generalist.train.deepspeed_config import filled_deepspeed_config
from generalist.train.mask_preflight import check_token_masks

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine
    from torch.optim.lr_scheduler import LRScheduler


def tokenizer_texts(
    mixture: Mixture, shards: Path, per_task: int = 20000, skip_bad: bool = False
) -> Iterator[str]:
    """Texts a tiny model's tokenizer is trained on: instructions and the fields of train records
    of every task (answers included, so each is a known word); skip_bad leaves bad samples out."""
    for name, _ in mixture.tasks:
        task = TASKS.get(name)
        yield from task.instructions
        yield "Instructions: Given <image>. Q: Options: (A) (B) (C) (D) A: <img>"
        records = (
            record
            for shard in split_shards(shards, task.dataset, "train")
            for record in iter_shard(shard.path, skip_bad=skip_bad, count=shard.count)
        )
        for n, record in enumerate(records):
            if n >= per_task:
                break
            parts = task.parts_of(record)
            yield " ".join([parts.context, parts.question, parts.target, *parts.options])


def setup_backends(cfg: TrainConfig, device: torch.device) -> None:
    """TF32 for fp32 matmuls and convolutions (`tf32`) on CUDA GPUs of compute capability 8.0+
    (Ampere and later); CPUs and older GPUs keep full fp32. bf16 work is unaffected."""
    if device.type != "cuda":
        return
    enabled = cfg.tf32 and torch.cuda.get_device_capability(device)[0] >= 8
    torch.set_float32_matmul_precision("high" if enabled else "highest")
    torch.backends.cudnn.allow_tf32 = enabled


def setup_model(cfg: TrainConfig, mixture: Mixture) -> ModelBundle:
    """Build the model on every rank with the same seed; rank 0 first, so a tiny model's
    tokenizer is trained once and the other ranks (and a resumed run) reuse it."""
    work_dir = cfg.output_dir / "model_work"
    tiny = cfg.model.tiny is not None
    texts = tokenizer_texts(mixture, cfg.shards, skip_bad=cfg.skip_bad) if tiny else None
    bundle = None
    for turn in (True, False):
        if dist.is_main() == turn:
            torch.manual_seed(cfg.seed)  # identical init everywhere: ZeRO-3 partitions it as is
            bundle = build_model(cfg.model, cfg.lora, texts_for_tokenizer=texts, work_dir=work_dir)
        dist.barrier()
    return bundle


def make_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> LRScheduler:
    """Linear warmup, then the configured decay to zero at `cfg.steps`, stepped per step."""
    name = {"constant": "constant_with_warmup"}.get(cfg.optim.decay, cfg.optim.decay)
    return get_scheduler(name, optimizer, cfg.optim.warmup_steps, cfg.steps)


def setup_engine(cfg: TrainConfig, model: torch.nn.Module, precision: str) -> DeepSpeedEngine:
    """DeepSpeed engine: torch AdamW (decay on matrices only) unless the JSON names an optimizer
    (ZeRO-Offload uses DeepSpeed's CPU Adam), and a warmup+decay schedule stepped per step."""
    ds = filled_deepspeed_config(cfg, precision)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {
            "params": [p for _, p in trainable if p.ndim >= 2],
            "weight_decay": cfg.optim.weight_decay,
        },
        {"params": [p for _, p in trainable if p.ndim < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    optimizer = None
    if "optimizer" not in ds:
        optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas)
    engine, *_ = deepspeed.initialize(
        model=model,
        model_parameters=groups,
        optimizer=optimizer,
        lr_scheduler=lambda opt: make_scheduler(opt, cfg),
        config=ds,
    )
    return engine


def setup_data(
    cfg: TrainConfig, mixture: Mixture, bundle: ModelBundle, start: dict[str, Any] | None
) -> tuple[MixtureStream, Iterator[MicroBatch]]:
    """This rank's stream and its length-grouped micro-batches, from `start` when resuming.

    The stream hands out windows of micro_batch_size x group_by_length examples; each window is
    cut into micro-batches of similar length (so its per-batch minimum per task holds per window).
    """
    micro = cfg.batch.micro_batch_size
    stream = build_stream(
        mixture,
        cfg.shards,
        "train",
        seed=cfg.seed,
        rank=dist.rank(),
        world_size=dist.world_size(),
        batch_size=micro * max(1, cfg.batch.group_by_length),
        num_workers=cfg.num_workers,
        skip_bad=cfg.skip_bad,
        schedule=cfg.schedule,
    )
    collator = Collator(bundle, max_length=cfg.batch.max_length)
    if cfg.batch.packing:  # before any data is read: a family packing cannot keep exact stops
        model_type = str(getattr(bundle.base_model.config, "model_type", "?"))
        check_packable(collator.layout.kind, model_type, cfg.model.attn_implementation)
    # a few examples per task: an empty, truncated or misplaced target stops the run here
    check_token_masks(collator, mixture, cfg.shards, seed=cfg.seed, skip_bad=cfg.skip_bad)
    # A DataLoader iterator draws its workers' base seed from the global torch RNG unless given
    # a generator; that draw would shift a resumed run's dropout masks (exact resume).
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = stream.dataloader(collate_fn=list, generator=generator)
    batch = cfg.batch
    return stream, grouped_batches(loader, collator, micro, start, batch.max_tokens, batch.packing)
