"""`generalist bench NAME`: small benchmarks, one module each (generalist/bench/<name>.py).

Each prints what it measured and, as its last line of output, one JSON object.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

# name -> one-line help; the module generalist.bench.<name> has main(argv).
BENCHMARKS: dict[str, str] = {
    "shard": "records/s and MB/s writing the easy-vqa demo data as shards",
    "stream": "examples/s reading a mixture stream from shards",
    "mixer": "the mixer at world 8/64/256, simulated: per-rank rates, reads per record, resume",
    "train": "training tokens/s, padding and MFU vs a plain DeepSpeed loop (tiny model)",
    "evaluate": "evaluation examples/s per kind vs the naive path (tiny model; ZeRO-3 on 2 ranks)",
    "gpu_check": "the prepared GPU check (launch/gpu_check.sh): ZeRO-2/3, resume, MFU",
}


def usage() -> str:
    lines = ["usage: generalist bench NAME [options]", ""]
    return "\n".join(lines + [f"  {name:<8} {text}" for name, text in BENCHMARKS.items()])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not argv or argv[0] not in BENCHMARKS:
        problem = f"unknown benchmark {argv[0]!r}" if argv else "name a benchmark"
        print(f"generalist bench: {problem}\n{usage()}", file=sys.stderr)
        return 2
    from generalist.verbosity import quiet_libraries

    quiet_libraries("--verbose" in argv)  # before the benchmark imports deepspeed
    module = importlib.import_module(f"generalist.bench.{argv[0]}")
    return int(module.main(argv[1:]) or 0)
