"""`deepspeed --num_gpus 2 packed_ranks.py CONFIG OUT_JSON`: the same training run four times in
one launch, under ZeRO-2 then ZeRO-3, each unpacked then packed (batch.packing with
batch.max_tokens large enough that each micro-batch's examples fill one row), so both see the
same examples in every optimizer step. Rank 0 writes, per stage, {"unpacked": {step: loss},
"packed": {step: loss}, "padding": {...}} as JSON. (A test helper: nothing of it is in the
package.)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from generalist import distributed as dist
from generalist.train.config import load_config
from generalist.train.loop import train
from generalist.train.preflight import check_config


def losses(out: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def main(config: str, out: str) -> None:
    result: dict = {}
    for stage in (2, 3):
        found: dict = {"padding": {}}
        for name, packing in (("unpacked", False), ("packed", True)):
            run = Path(config).with_name(f"run-{stage}-{name}")
            overrides = [f"output_dir={run}", f"deepspeed={stage}"]
            cfg = load_config(config, [*overrides, f"batch.packing={str(packing).lower()}"])
            last = train(cfg, check_config(cfg))
            if dist.is_main():
                found[name] = losses(run)
                found["padding"][name] = last["train/padding_fraction"]
        result[str(stage)] = found
    if dist.is_main():
        Path(out).write_text(json.dumps(result))
    dist.barrier()


if __name__ == "__main__":
    main(*[a for a in sys.argv[1:] if not a.startswith("--local_rank")])
