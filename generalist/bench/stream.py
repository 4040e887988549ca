"""`generalist bench stream`: our mixture stream against the loaders users compare it with.

    generalist bench stream                       # shards easy-vqa into a temp dir first
    generalist bench stream --shards shards/ --examples 60000 --loaders generalist,litdata

Every loader reads the same records (ours and plain webdataset/HF our shards; Megatron-Energon,
MosaicML streaming and litdata the records converted to their own formats: stream_energon.py,
stream_mosaic.py, stream_litdata.py), mixed with the same rates (the `demo` mixture's, without
its per-batch minimum), and does the same per-example work (JSON decoded to a Record, images
kept encoded, `format_example` with the same exemplar pools), in one process, in batches of 32.
For each it reports examples/s, the rate error (worst task, in examples: |count - rate x n|)
after 6k and 60k examples and over every prefix that ends a batch, and the time to resume at
example 50,000 (a new loader from the saved state, plus its first batch; `resume_exact`: that
batch is the one the uninterrupted run read). Targets: ours >= 1.0x the fastest peer in
examples/s, at most 1 example of rate error at every batch end (stratified schedule), resume
under 1 s. Loaders not installed (the `bench` extra) are skipped with a note. The last line is
one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from generalist.bench import stream_energon, stream_litdata, stream_mosaic
from generalist.bench.stream_common import BATCH, Measured, Pipeline, make_format, measure
from generalist.bench.stream_peers import HFInterleave, Ours, WebDataset
from generalist.catalog.loading import load_catalog
from generalist.catalog.mixture import MIXTURES, mixture_from_rates
from generalist.errors import ConfigError
from generalist.mixing.stream import build_stream
from generalist.shards.manifest import load_manifest
from generalist.shards.writer import write_dataset

LOADERS = ("generalist", "generalist-iid", "megatron-energon", "mosaic-streaming", "litdata",
           "webdataset", "hf-interleave")  # fmt: skip
CONVERTED = {"megatron-energon": stream_energon, "mosaic-streaming": stream_mosaic,
             "litdata": stream_litdata}  # fmt: skip
PEERS = ("megatron-energon", "mosaic-streaming", "litdata", "webdataset", "hf-interleave")


def write_demo_shards(root: Path, limit: int) -> None:
    """easy-vqa questions and images, train split, first `limit` records each."""
    for dataset in ("easy_vqa", "easy_vqa_images"):
        write_dataset(dataset, None, root, splits=["train"], shard_size=500, image_size=64,
                      progress=False, limit=limit)  # fmt: skip


def pipelines(names: Sequence[str], root: Path, seed: int, work: Path) -> tuple[list, dict]:
    """The loaders to run (converted data written under `work`) and those skipped, with why."""
    mixture = mixture_from_rates("bench", MIXTURES.get("demo").rates())
    probe = build_stream(mixture, root, "train", seed=seed, batch_size=32)
    rates = probe.target_rates
    fmt = make_format({p.task.name: p.pool for p in probe.plans}, seed)
    chosen: list[Pipeline] = []
    skipped: dict[str, str] = {}
    for name in names:
        if name in ("generalist", "generalist-iid"):
            chosen.append(
                Ours(mixture, root, seed, "iid" if name.endswith("iid") else "stratified")
            )
        elif name == "webdataset":
            chosen.append(WebDataset(root, rates, fmt, seed))
        elif name == "hf-interleave":
            chosen.append(HFInterleave(root, rates, fmt, seed))
        elif (why := CONVERTED[name].available()) is not None:
            skipped[name] = why
        else:
            started = time.perf_counter()
            peer = {"megatron-energon": stream_energon.Energon, "mosaic-streaming":
                    stream_mosaic.Mosaic, "litdata": stream_litdata.LitData}[name]  # fmt: skip
            chosen.append(peer(root, rates, fmt, seed, work))
            print(f"{name}: converted the records in {time.perf_counter() - started:.1f} s")
    return chosen, {"rates": rates, "skipped": skipped}


def report(results: list[Measured], rates: dict[str, float], n: int, skipped: dict) -> dict:
    marks = [m for m in (6000, 60000) if m <= n] or [n]
    loaders = {r.name: r.summary(rates, marks) for r in results}
    ours = loaders.get("generalist", {})
    speed = {name: s["examples_per_s"] for name, s in loaders.items()}
    peers = {name: speed[name] for name in PEERS if name in speed}
    fastest = max(peers, key=peers.__getitem__) if peers else None
    mine = ours.get("examples_per_s", 0.0)
    stratified = [r for r in results if r.name == "generalist"]
    final_error = 0.0
    if stratified and stratified[0].tasks:
        counts = stratified[0].tasks
        final_error = max(abs(counts.count(t) / len(counts) - r) for t, r in rates.items())
    out: dict[str, Any] = {
        "examples": n,
        "target_rates": {t: round(r, 4) for t, r in rates.items()},
        "loaders": loaders,
        "skipped": skipped,
        "examples_per_s": mine,
        "max_rate_error": round(final_error, 5),  # as a fraction of n, as before
        "fastest_peer": fastest,
        "vs_fastest_peer": round(mine / peers[fastest], 3) if fastest else None,
    }
    for name, key in (("webdataset", "vs_webdataset"), ("hf-interleave", "vs_hf_interleave")):
        out[key] = round(mine / speed[name], 3) if speed.get(name) else None
    resume = ours.get("resume_s")
    out["meets_targets"] = bool(
        ours
        and (fastest is None or mine >= peers[fastest])
        and ours["max_prefix_error"] <= 1.0 + 1e-9
        and (resume is None or resume < 1.0)
    )
    return out


def table(loaders: dict[str, dict[str, Any]]) -> list[str]:
    keys = [k for k in next(iter(loaders.values())) if k.startswith("rate_error_at")]
    head = ["loader", "examples/s", *[k.removeprefix("rate_error_") for k in keys],
            "max prefix error", "resume (s)", "exact"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, s in loaders.items():
        ends = [str(s["max_prefix_error"]), str(s["resume_s"]), str(s["resume_exact"])]
        cells = [name, f"{s['examples_per_s']:,.0f}", *[str(s[k]) for k in keys], *ends]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="generalist bench stream", description=__doc__)
    parser.add_argument("--shards", type=Path, help="shard root with easy_vqa, easy_vqa_images")
    parser.add_argument("--examples", type=int, default=60000, help="examples per loader")
    parser.add_argument("--resume-at", type=int, default=50000, help="example to resume at")
    parser.add_argument("--limit", type=int, default=4000, help="records per dataset (temp)")
    parser.add_argument("--loaders", default=",".join(LOADERS), help="comma-separated subset")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="runs per loader; best is kept")
    args = parser.parse_args(argv)
    names = [n for n in args.loaders.split(",") if n]
    unknown = sorted(set(names) - set(LOADERS))
    if unknown or not names:
        raise ConfigError(f"--loaders: unknown {unknown}; choose from {list(LOADERS)}")
    load_catalog()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the shards are local: no hub lookups
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        root = args.shards
        if root is None:
            root = Path(tmp) / "shards"
            started = time.perf_counter()
            write_demo_shards(root, args.limit)
            print(f"wrote demo shards in {time.perf_counter() - started:.1f} s")
        for dataset in ("easy_vqa", "easy_vqa_images"):
            load_manifest(root, dataset)  # a clear error before any timing
        chosen, info = pipelines(names, root, args.seed, Path(tmp) / "converted")
        resume_at = min(args.resume_at, max(BATCH, args.examples - 2 * BATCH))
        best: dict[str, Measured] = {}
        for attempt in range(args.repeats):  # interleaved: a busy machine slows all alike
            for pipeline in chosen:
                run = measure(pipeline, args.examples, resume_at)
                print(f"{pipeline.name} (run {attempt + 1}): "
                      f"{len(run.tasks) / run.seconds:,.0f} examples/s")  # fmt: skip
                if pipeline.name not in best or run.seconds < best[pipeline.name].seconds:
                    best[pipeline.name] = run
        result = report(list(best.values()), info["rates"], args.examples, info["skipped"])
        result["repeats"] = args.repeats
    for line in table(result["loaders"]):
        print(line)
    for name, why in result["skipped"].items():
        print(f"skipped {name}: {why}")
    print(json.dumps(result))
    return 0
