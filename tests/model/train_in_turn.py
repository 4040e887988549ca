"""`generalist train` on each config given, in turn, in one launched process: one DeepSpeed
launch trains several tiny models (the launch, not the steps, is the cost of such a test).
Run by test_families_a.py as `deepspeed --num_gpus 2 --no_local_rank train_in_turn.py CFG...`."""

from __future__ import annotations

import sys

from generalist.cli import main

if __name__ == "__main__":
    for config in sys.argv[1:]:
        code = main(["train", config])
        if code:
            sys.exit(code)
