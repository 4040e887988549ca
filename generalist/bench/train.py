"""`generalist bench train`: training tokens/s and padding, ours vs a plain DeepSpeed loop.

    generalist bench train                      # shards a slice of easy-vqa into a temp dir
    generalist bench train --shards demo_out/shards --steps 20 --micro-batch-size 16 --group 16

Both loops train the same tiny LLaVA (2+2 layers, width 64; same initial weights) on the same demo
mixture stream, one process, DeepSpeed ZeRO-2, same micro-batch size:
  ours   generalist.train's step: length-grouped micro-batches (windows of --group
         micro-batches), per-example loss and per-task accounting (LossMeter), lr schedule
  plain  the hand-written loop: DataLoader(stream, collate_fn=Collator), engine(**batch).loss,
         engine.backward, engine.step; no grouping
Short rounds (2 steps) alternate between the two after warm-up steps; vs_plain_deepspeed is the
median over rounds of ours/plain tokens/s in adjacent rounds, so a busy machine slows both alike.
tokens/s counts real (attended) tokens; padding_fraction = padded positions / all positions.
Targets: vs_plain_deepspeed >= 0.95 and padding_fraction < 0.10. On a GPU also `mfu`: model
FLOPs (6 x parameters x tokens, attention ignored) over the device's bf16 dense peak.
The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from generalist import distributed as dist
from generalist.batching.collate import Collator, model_inputs, to_device
from generalist.bench.stream import write_demo_shards
from generalist.catalog.loading import load_catalog
from generalist.catalog.mixture import Mixture
from generalist.mixing.stream import build_stream
from generalist.model.bundle import ModelBundle
from generalist.train.config import TrainConfig
from generalist.train.deepspeed_config import filled_deepspeed_config
from generalist.train.preflight import check_config
from generalist.train.setup import setup_data, setup_engine, setup_model
from generalist.train.step import LossMeter, train_window

# bf16 dense peak FLOP/s by device name fragment (vendor datasheets), for MFU on a GPU.
PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="generalist bench train", description=__doc__)
    parser.add_argument("--shards", type=Path, help="shards of easy_vqa and easy_vqa_images")
    parser.add_argument("--limit", type=int, default=400, help="records sharded per dataset")
    parser.add_argument("--steps", type=int, default=2, help="measured steps per loop per round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--group", type=int, default=8, help="micro-batches per length window")
    return parser.parse_args(argv)


def bench_config(shards: Path, out: Path, args: argparse.Namespace) -> Any:
    """The demo mixture on a tiny LLaVA (smaller than the demo's, so the bench takes seconds)."""
    tiny = {"vision_layers": 2, "text_layers": 2, "hidden_size": 64, "heads": 4}
    tiny |= {"image_size": 64, "patch_size": 16, "vocab_size": 2000}
    batch = {"micro_batch_size": args.micro_batch_size, "max_length": 192}
    return TrainConfig.model_validate(
        {
            "mixture": "demo",
            "shards": str(shards),
            "output_dir": str(out),
            "model": {"tiny": tiny},
            "lora": {"enabled": False},
            "deepspeed": 2,
            "optim": {"lr": 1e-3, "warmup_steps": 0, "decay": "constant"},
            "batch": {**batch, "group_by_length": args.group},
            "steps": 10**6,
            "logging": {"mlflow": False},
        }
    )


def plain_loop(
    cfg: TrainConfig,
    mixture: Mixture,
    bundle: ModelBundle,
    model: Any,
    device: torch.device,
    precision: str,
) -> Callable:
    """The hand-written DeepSpeed loop a user would write first; returns one-step closure."""
    import deepspeed
    import torch
    from torch.utils.data import DataLoader

    micro = cfg.batch.micro_batch_size
    stream = build_stream(mixture, cfg.shards, "train", cfg.seed, 0, 1, batch_size=micro)
    loader = DataLoader(stream, batch_size=micro, collate_fn=Collator(bundle, cfg.batch.max_length))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr)
    engine, *_ = deepspeed.initialize(
        model=model, optimizer=optimizer, config=filled_deepspeed_config(cfg, precision)
    )
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)
    batches = iter(loader)

    def step() -> Any:
        batch = next(batches)
        inputs = {k: v.to(device) for k, v in model_inputs(batch).items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
        loss = engine(**inputs).loss
        engine.backward(loss)
        engine.step()
        return batch["attention_mask"]

    return step


def our_loop(
    cfg: TrainConfig, mixture: Mixture, bundle: ModelBundle, device: torch.device, precision: str
) -> Callable:
    """generalist.train's setup and step body; returns a one-step closure."""
    engine = setup_engine(cfg, bundle.model, precision)
    _, batches = setup_data(cfg, mixture, bundle, None)
    meter = LossMeter([name for name, _ in mixture.tasks], device)
    calls = [0]

    def step() -> Any:
        window = [next(batches)]
        train_window(engine, window, cfg.batch.loss_normalization, device, precision, meter)
        batch = window[0][1]
        calls[0] += 1
        if calls[0] % 10 == 0:
            meter.summary(engine.get_lr()[0])  # what logging.every=10 costs
        return batch["attention_mask"]

    return step


def measure(step: Callable, n: int, totals: dict[str, float]) -> None:
    start = time.perf_counter()
    for _ in range(n):
        mask = step()
        totals["real"] += float(mask.sum())
        totals["positions"] += float(mask.numel())
    totals["seconds"] += time.perf_counter() - start


def mfu(tokens_per_s: float, n_params: int) -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    peak = next((v for k, v in PEAK_BF16.items() if k in name), None)
    return 6 * n_params * tokens_per_s / peak if peak else None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)

    load_catalog()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        shards = args.shards
        if shards is None:
            shards = Path(tmp) / "shards"
            write_demo_shards(shards, args.limit)
        cfg = bench_config(shards, Path(tmp) / "run", args)
        mixture = check_config(cfg)
        device = dist.init_distributed()
        precision = dist.auto_precision("auto")
        bundle = setup_model(cfg, mixture)
        n_params = sum(p.numel() for p in bundle.model.parameters())
        plain_model = copy.deepcopy(bundle.model)  # same initial weights for both loops
        loops = {
            "plain": plain_loop(cfg, mixture, bundle, plain_model, device, precision),
            "ours": our_loop(cfg, mixture, bundle, device, precision),
        }
        totals = {k: {"real": 0.0, "positions": 0.0, "seconds": 0.0} for k in loops}
        for step in loops.values():
            measure(step, args.warmup, {"real": 0.0, "positions": 0.0, "seconds": 0.0})
        ratios = []
        for _ in range(args.rounds):
            speed = {}
            for name, step in loops.items():
                one = {"real": 0.0, "positions": 0.0, "seconds": 0.0}
                measure(step, args.steps, one)
                speed[name] = one["real"] / one["seconds"]
                totals[name] = {k: totals[name][k] + v for k, v in one.items()}
            ratios.append(speed["ours"] / speed["plain"])
    result: dict[str, Any] = {}
    for name, t in totals.items():
        speed, pad = t["real"] / t["seconds"], 1 - t["real"] / t["positions"]
        print(f"{name:<6} {speed:10.0f} tokens/s  padding {pad:6.1%}  ({t['seconds']:.1f} s)")
        result[name] = {"tokens_per_s": round(speed, 1), "padding_fraction": round(pad, 4)}
    ours, plain = result["ours"], result["plain"]
    summary = {
        "tokens_per_s": ours["tokens_per_s"],
        "vs_plain_deepspeed": round(statistics.median(ratios), 3),
        "padding_fraction": ours["padding_fraction"],
        "plain_tokens_per_s": plain["tokens_per_s"],
        "plain_padding_fraction": plain["padding_fraction"],
        "micro_batch_size": args.micro_batch_size,
        "steps": args.steps * args.rounds,
        "device": str(device),
        "precision": precision,
    }
    value = mfu(ours["tokens_per_s"], n_params)
    if value is not None:
        summary["mfu"] = round(value, 4)
    print(json.dumps(summary))
    return 0
