"""`generalist bench gpu_check --spec configs/gpu_check_qwen2vl_2b.yaml --out launch/gpu_results`:
the prepared GPU check (launch/gpu_check.sh installs what the machine lacks, then runs this).

On one GPU, with a realistic-size VLM built from the spec with random weights (written as a
checkpoint dir, loaded through the auto classes like a hub model), LoRA and bf16 (precision
auto), on easy-vqa shards written first, each run a real `generalist train` in this process:

  zero2       ZeRO-2, a checkpoint halfway
  resume      from that checkpoint in a new output_dir: the same next losses (CPU: to 1e-6;
              CUDA: bf16 kernels are not bitwise deterministic, so to 2e-2)
  zero3       ZeRO-3
  attention   eager and flash_attention_2 (when flash-attn is installed; else its ConfigError)
  packed      packed rows with sdpa's block mask, then with flash_attention_2's varlen kernel:
              the same first loss (bf16: to 2e-2)
  liger       model.liger_kernel (when liger-kernel is installed; else its ConfigError)
  bench       `generalist bench train --config` on the same model: tokens/s vs a plain loop,
              padding, time split, MFU (generalist.train.flops)

Each run records ok / error (one line), losses, tokens/s, padding, seconds and on CUDA its peak
memory; one failing run does not stop the others. Prints one JSON line and writes it to
<out>/<date>-<device>.json. --dry-run is the same on CPU with a tiny spec (CI runs it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from generalist.catalog.loading import load_catalog
from generalist.config_base import StrictConfig
from generalist.errors import ConfigError
from generalist.shards.writer import write_dataset
from generalist.train.config import TrainConfig, set_dotted

# Absent on the lent machine; hidden here too (an import of one fails as it would there, an
# optional one, like DeepSpeed's autotuner's mlflow, finds it missing), so the dry run proves
# the check needs none of them.
NOT_ON_DEVICE = ("mlflow", "webdataset", "datasets")
CHECK_STEPS = ("zero2", "zero3", "attention")


class CheckSpec(StrictConfig):
    """A configs/gpu_check_*.yaml file (strict): see configs/gpu_check_qwen2vl_2b.yaml."""

    architecture: str
    tokenizer_vocab: int
    image_size: int
    shard_limit: int
    model: dict[str, Any]
    train: dict[str, Any]
    steps: dict[str, int]
    bench: dict[str, int | str]


def load_spec(path: Path) -> CheckSpec:
    """The spec; a missing file or key is a ConfigError naming it."""
    if not path.is_file():
        raise ConfigError(f"gpu check spec {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:  # one line: PyYAML's own message spans several
        raise ConfigError(f"gpu check spec {path}: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"gpu check spec {path}: the top level must be a mapping of keys")
    try:
        spec = CheckSpec.parse(data)
    except ConfigError as err:
        raise ConfigError(f"gpu check spec {path}: {err}") from None
    if spec.architecture != "qwen2_vl":
        raise ConfigError(f"gpu check spec {path}: architecture must be qwen2_vl")
    missing = [k for k in CHECK_STEPS if k not in spec.steps]
    if missing:
        raise ConfigError(f"gpu check spec {path}: steps needs {', '.join(missing)}")
    return spec


def one_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"[:400]


def losses_of(out: Path) -> dict[int, float]:
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def run_training(base: Mapping[str, Any], name: str, work: Path, **overrides: Any) -> dict:
    """One `generalist train` run (in this process) of `base` with dotted overrides."""
    import torch

    from generalist.train.loop import train
    from generalist.train.preflight import check_config

    data = json.loads(json.dumps(base))
    data["output_dir"] = str(work / name)
    for key, value in overrides.items():
        set_dotted(data, key, value)
    record: dict[str, Any] = {"ok": False}
    started = time.perf_counter()
    try:
        cfg = TrainConfig.model_validate(data)
        mixture = check_config(cfg)
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        last = train(cfg, mixture)
        record["losses"] = losses_of(cfg.output_dir)
        record |= {k.split("/", 1)[1]: round(v, 4) for k, v in last.items() if k.count("/") == 1}
        record.pop("lr", None)
        record["ok"] = bool(record["losses"])
    except Exception as err:  # recorded; the other runs go on
        record["error"] = one_line(err)
    finally:
        record["seconds"] = round(time.perf_counter() - started, 1)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return record


def compare_losses(reference: dict, run: dict, tolerance: float) -> dict:
    """`run`'s losses against the reference run's at their common steps (a resumed run against
    the uninterrupted one; flash-attention varlen packing against sdpa's block mask)."""
    if not (reference.get("ok") and run.get("ok")):
        return run
    steps = sorted(set(reference["losses"]) & set(run["losses"]))
    diff = max(abs(reference["losses"][s] - run["losses"][s]) for s in steps) if steps else None
    ok = diff is not None and diff <= tolerance
    return run | {"ok": ok, "steps_compared": steps, "max_abs_diff": diff}


def base_config(spec: CheckSpec, shards: Path, model_dir: Path) -> dict[str, Any]:
    train = json.loads(json.dumps(spec.train))
    model = {"name_or_path": str(model_dir), **train.pop("model", {})}
    logging = {"mlflow": False, "every": 1, **train.pop("logging", {})}
    return {"mixture": "demo", "shards": str(shards), "model": model, "logging": logging} | train


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="generalist bench gpu_check", description=__doc__)
    parser.add_argument("--spec", type=Path, default=Path("configs/gpu_check_qwen2vl_2b.yaml"))
    parser.add_argument("--out", type=Path, default=Path("launch/gpu_results"))
    parser.add_argument("--work", type=Path, help="scratch dir (default: a temp dir)")
    parser.add_argument("--dry-run", action="store_true", help="CPU, the tiny spec")
    parser.add_argument("--verbose", action="store_true", help="the libraries' own logs")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for name in NOT_ON_DEVICE:
        if not isinstance(sys.modules.get(name), ModuleType):
            sys.modules[name] = None  # type: ignore[assignment]  # "import name" now fails
    if args.dry_run and args.spec == parse_args([]).spec:
        args.spec = Path("configs/gpu_check_tiny.yaml")
    spec = load_spec(args.spec)
    load_catalog()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        result = check(spec, args, Path(args.work or tmp))
    print(json.dumps(result))
    args.out.mkdir(parents=True, exist_ok=True)
    device = result["gpu"] or "cpu"
    name = f"{result['date']}-{device.replace(' ', '_')}{'-dry-run' if args.dry_run else ''}.json"
    (args.out / name).write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["ok"] else 1


def check(spec: CheckSpec, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Every step of the check; the result record."""
    import deepspeed
    import peft
    import torch
    import transformers

    from generalist import distributed as dist
    from generalist.bench.gpu_model import write_random_qwen2_vl
    from generalist.bench.train import bench
    from generalist.bench.train import parse_args as bench_args
    from generalist.catalog.mixture import MIXTURES
    from generalist.train.setup import tokenizer_texts

    started = time.perf_counter()
    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        raise ConfigError("no CUDA GPU here: run the check with --dry-run on a CPU machine")
    result: dict[str, Any] = {
        "check": "gpu_check",
        "dry_run": bool(args.dry_run),
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ"),
        "spec": str(args.spec),
        "gpu": torch.cuda.get_device_name() if cuda else None,
        "package": str(Path(__file__).parents[1]),  # the copy gpu_check.sh laid out
        "train": spec.train,  # the settings every run shares (LoRA, checkpointing, batch)
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__}
        | {"transformers": transformers.__version__, "peft": peft.__version__}
        | {"deepspeed": deepspeed.__version__},
    }
    timings: dict[str, float] = {}
    t = time.perf_counter()
    shards = work / "shards"
    for dataset in ("easy_vqa", "easy_vqa_images"):
        write_dataset(dataset, None, shards, splits=["train"], image_size=spec.image_size,
                      progress=False, limit=spec.shard_limit)  # fmt: skip
    timings["shard"] = round(time.perf_counter() - t, 1)
    device = dist.init_distributed()
    t = time.perf_counter()
    texts = list(tokenizer_texts(MIXTURES.get("demo"), shards, per_task=2000))
    dtype = torch.bfloat16 if cuda else torch.float32
    model_dir = work / "model"
    result["model"] = write_random_qwen2_vl(
        spec.model, spec.image_size, texts, model_dir, spec.tokenizer_vocab, dtype, device
    )
    timings["write_model"] = round(time.perf_counter() - t, 1)
    base = base_config(spec, shards, model_dir)
    base["logging"]["verbose"] = bool(args.verbose)
    runs: dict[str, Any] = {}
    n = spec.steps["zero2"]
    half = n // 2
    every = {"checkpoint.every": half}
    runs["zero2"] = run_training(base, "zero2", work, deepspeed=2, steps=n, **every)
    resume_from = work / "zero2" / "checkpoints" / f"step-{half:06d}"
    resumed = run_training(base, "resume", work, deepspeed=2, steps=n, resume=str(resume_from))
    tolerance = 2e-2 if cuda else 1e-6
    runs["resume"] = compare_losses(runs["zero2"], resumed, tolerance)
    runs["zero3"] = run_training(base, "zero3", work, deepspeed=3, steps=spec.steps["zero3"])
    a = spec.steps["attention"]
    for impl in ("eager", "flash_attention_2"):
        runs[impl] = run_training(base, impl, work, steps=a, **{"model.attn_implementation": impl})
    runs["liger"] = run_training(base, "liger", work, steps=a, **{"model.liger_kernel": True})
    # packed rows (docs/packing.md), sdpa's block mask and flash-attention varlen (its ConfigError
    # without flash-attn): the same first step's loss
    packed = {"batch.packing": True, "batch.max_tokens": 2 * base["batch"]["max_length"]}
    runs["packed"] = run_training(base, "packed", work, steps=1, **packed)  # CI time: one step
    flash = {**packed, "model.attn_implementation": "flash_attention_2"}
    varlen = run_training(base, "packed_fa2", work, steps=a, **flash)
    runs["packed_flash_attention_2"] = compare_losses(runs["packed"], varlen, tolerance)
    result["runs"] = runs
    t = time.perf_counter()
    config = work / "bench.yaml"
    config.write_text(yaml.safe_dump(base))
    options = [f"--{k.replace('_', '-')}={v}" for k, v in spec.bench.items()]
    try:
        result["bench"] = bench(bench_args(["--config", str(config), *options]))
    except Exception as err:
        result["bench"] = {"error": one_line(err)}
    timings["bench"] = round(time.perf_counter() - t, 1)
    result["hidden_modules"] = [m for m in NOT_ON_DEVICE if sys.modules.get(m, 0) is None]
    required = [runs[k].get("ok") for k in ("zero2", "resume", "zero3", "eager")]
    required.append("error" not in result["bench"] and (not cuda or "mfu" in result["bench"]))
    result["ok"] = all(required)
    timings["total"] = round(time.perf_counter() - started, 1)
    result["seconds"] = timings
    return result
