"""`generalist train CONFIG [key=value ...]`: multitask LoRA training under DeepSpeed ZeRO.

    generalist train configs/demo.yaml optim.lr=1e-3                # one process
    deepspeed --num_gpus 8 --module generalist.cli train configs/multimedbench_llava.yaml
    bash launch/single_node.sh 2 configs/tiny_test.yaml              # 2 CPU ranks over gloo

Config errors stop the run before torch is imported (generalist.train.preflight); the run itself
is generalist.train.loop.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

from generalist.train.config import load_config
from generalist.train.preflight import check_config
from generalist.train.resume import finished


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="generalist train", description=__doc__.split("\n")[0])
    parser.add_argument("config", type=Path, help="YAML config (see configs/)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value, e.g. optim.lr=1e-3")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="show the libraries' own progress bars, INFO lines and warnings (logging.verbose)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    if args.verbose:
        cfg = cfg.model_copy(update={"logging": cfg.logging.model_copy(update={"verbose": True})})
    mixture = check_config(cfg)  # everything checkable is checked before torch is imported
    done = finished(cfg)  # a finished run says so now, not after loading everything
    if done:
        if os.environ.get("RANK", "0") == "0":  # once under a launcher
            print(done)
        return 0
    from generalist.verbosity import quiet_libraries

    quiet_libraries(cfg.logging.verbose)  # before deepspeed is imported: it speaks at import
    # imported here so that a config error is reported in a second, without torch and deepspeed
    from generalist.train.loop import train

    train(cfg, mixture)
    return 0
