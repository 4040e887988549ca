"""`generalist pretrain-vision CONFIG --dataset NAME --fields F [F ...] --out DIR`: pretrain a tiny
LLaVA's vision tower on image labels (see generalist.train.vision_pretrain)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from generalist.errors import ConfigError
from generalist.train.config import load_config
from generalist.train.vision_pretrain import accuracy_line, pretrain_vision


def main(argv: Sequence[str] | None = None) -> int:

    parser = argparse.ArgumentParser(
        prog="generalist pretrain-vision",
        description="Pretrain a tiny LLaVA's vision tower on image labels from shards; start "
        "training from it with model.tiny.vision_init=OUT.",
    )
    parser.add_argument("config", help="training config whose model.tiny sizes the tower")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    parser.add_argument("--dataset", required=True, help="a sharded dataset with images")
    parser.add_argument("--fields", nargs="+", required=True, help="label fields of its records")
    parser.add_argument("--out", required=True, type=Path, help="where the tower is saved")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if cfg.model.tiny is None:
        raise ConfigError("model.tiny: pretrain-vision needs a tiny model config to size the tower")
    if args.steps < 1 or args.batch_size < 1:
        raise ConfigError("--steps and --batch-size must be at least 1")
    result = pretrain_vision(
        cfg.model.tiny,
        cfg.shards,
        args.dataset,
        args.fields,
        args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
    )
    print(f"pretrain-vision: {accuracy_line(result)}; tower saved to {args.out}")
    return 0
