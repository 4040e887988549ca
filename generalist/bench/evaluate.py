"""`generalist bench evaluate`: evaluation examples/s per kind, fast path vs naive path.

    generalist bench evaluate [--examples N] [--options K] [--batch-size B] [--skip-zero3]
                              [--out FILE]

One tiny LLaVA (built from config, tokenizer trained locally; LoRA moved off zero so the
adapters take part) and synthetic examples, the same for both paths:
- option scoring: K options per example; fast = each prompt and image encoded once
  (generalist.eval.option_cache), naive = one full forward per option.
- short / long generation: prompts of mixed lengths (1..40 phrases); fast = batches sorted by
  prompt length, naive = input order; budgets 8 and 64 new tokens.
- zero3: periodic evaluation of those examples' shapes (generation + option scoring) under
  ZeRO-3 on 2 CPU ranks; fast = the model gathered once for the pass, naive = per-token
  gathers (synced_gpus).
The last line of output is one JSON object: examples_per_s_<kind>_{fast,naive} and
vs_naive_<kind> (fast / naive). Both paths must agree (scores to 1e-5 relative 1e-6,
generations token for token); the bench checks it and says so in `equal_<kind>`.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from deepspeed import DeepSpeedEngine

    from generalist.model.bundle import ModelBundle

CORPUS = [
    "Instructions: answer the question about the image.",
    "Given <image>. Q: what color is the shape? A: red blue green yellow",
    "Q: is there a circle in the image? A: yes no",
    "Q: what shape is it? A: circle rectangle triangle square star cross ring dot",
]
TINY = {"hidden_size": 64, "heads": 4, "image_size": 64, "patch_size": 8, "seed": 0}
OPTIONS = ("circle", "rectangle", "triangle", "square", "star", "cross", "ring", "dot")
PHRASE = "what shape is it in the image? "


def tiny_bundle() -> Any:
    """The bench's tiny LLaVA (LoRA B moved off zero, eval mode)."""
    import torch

    from generalist.model.build import build_model
    from generalist.model.config import LoraSettings, ModelConfig

    bundle = build_model(
        ModelConfig.parse({"tiny": TINY}), LoraSettings.parse({}), texts_for_tokenizer=CORPUS
    )
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in bundle.model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.05)
    bundle.model.eval()
    return bundle


def png(seed: int) -> bytes:
    from PIL import Image

    rng = random.Random(seed)
    image = Image.new("RGB", (64, 64), tuple(rng.randrange(256) for _ in range(3)))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def examples(n: int, options: int, seed: int = 0) -> list[Any]:
    """n image examples with prompts of 1..40 phrases (mixed lengths) and `options` options."""
    from generalist.catalog.records import Example

    rng = random.Random(seed)
    out = []
    for i in range(n):
        question = PHRASE * rng.randint(1, 40)
        prompt = (
            f"Instructions: answer the question about the image.\nGiven <image>. Q: {question}\nA:"
        )
        opts = OPTIONS[:options]
        out.append(Example("bench", f"b{i}", prompt, opts[i % options], (png(i),), opts))
    return out


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def batched(fn: Callable[[list[Any]], list[Any]], items: Sequence[Any], size: int) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(items), size):
        out.extend(fn(list(items[i : i + size])))
    return out


def close(a: list[list[float]], b: list[list[float]]) -> bool:
    return all(abs(x - y) <= 1e-5 + 1e-6 * abs(y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def local_kinds(args: argparse.Namespace) -> dict[str, Any]:
    from generalist.eval.generation import HFPredictor, predict_sorted

    bundle = tiny_bundle()
    fast = HFPredictor(bundle, max_length=512)
    naive = HFPredictor(bundle, max_length=512, naive=True)
    data = examples(args.examples, args.options)
    out: dict[str, Any] = {}
    batch = args.batch_size
    for predictor in (fast, naive):  # one-time costs (kernels, processor caches) off the clock
        predictor.score_options(data[:1])
        predict_sorted(predictor, data[:2], batch, 2)
    got, t_fast = timed(lambda: batched(fast.score_options, data, batch))
    want, t_naive = timed(lambda: batched(naive.score_options, data, batch))
    out["option_scoring"] = (t_fast, t_naive, close(got, want))
    print(f"option_scoring: fast {t_fast:.1f} s, naive {t_naive:.1f} s", flush=True)
    for kind, budget in (("short_generation", 8), ("long_generation", 64)):
        got, t_fast = timed(lambda: predict_sorted(fast, data, batch, budget))  # noqa: B023
        want, t_naive = timed(lambda: predict_sorted(naive, data, batch, budget))  # noqa: B023
        out[kind] = (t_fast, t_naive, got == want)
        print(f"{kind}: fast {t_fast:.1f} s, naive {t_naive:.1f} s", flush=True)
    return out


def zero3_engine(model_dir: str | Path) -> tuple[ModelBundle, DeepSpeedEngine]:
    """(bundle, engine): a saved model dir under a ZeRO-3 engine whose LoRA adapters train, as
    in training, so evaluation meets partitioned weights (every rank; after init_distributed)."""
    import deepspeed

    from generalist.model.model_dir import load_model_dir

    bundle = load_model_dir(model_dir)
    # a loaded model dir is for inference: train its adapters, as training would
    params = [p for n, p in bundle.model.named_parameters() if "lora_" in n]
    for param in params:
        param.requires_grad_(True)
    config = {
        "train_micro_batch_size_per_gpu": 1,
        "zero_optimization": {"stage": 3},
        "optimizer": {"type": "AdamW", "params": {"lr": 1e-3, "torch_adam": True}},
    }
    engine, *_ = deepspeed.initialize(model=bundle.model, model_parameters=params, config=config)
    engine.module.eval()
    return bundle, engine


def zero3_worker(model_dir: str, out: str, n: int, options: int) -> None:
    """One rank of the ZeRO-3 kind (started twice by `zero3_kind`)."""
    from generalist import distributed
    from generalist.eval.generation import HFPredictor, predict_sorted
    from generalist.train.periodic_eval import whole_model

    distributed.init_distributed()
    bundle, engine = zero3_engine(model_dir)
    data = examples(n, options)
    share = data[distributed.rank() :: distributed.world_size()]
    result: dict[str, Any] = {}
    for mode in ("naive", "fast"):
        distributed.barrier()
        start = time.perf_counter()
        if mode == "fast":
            with whole_model(engine) as gathered:
                p = HFPredictor(bundle, 512, model=engine.module, synced_gpus=not gathered)
                texts = predict_sorted(p, share, 4, 8)
                scores = batched(p.score_options, share, 4)
        else:
            p = HFPredictor(bundle, 512, model=engine.module, synced_gpus=True, naive=True)
            texts = predict_sorted(p, share, 4, 8)
            scores = batched(p.score_options, share, 4)
        distributed.barrier()
        result[mode] = {"seconds": time.perf_counter() - start, "texts": texts, "scores": scores}
    if distributed.is_main():
        Path(out).write_text(json.dumps(result))
    distributed.barrier()


def zero3_kind(args: argparse.Namespace) -> tuple[float, float, bool]:
    from generalist.model.model_dir import save_model_dir

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_model_dir(tiny_bundle(), Path(tmp) / "model")
        out = Path(tmp) / "zero3.json"
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env.update(
            OMP_NUM_THREADS="1",
            TOKENIZERS_PARALLELISM="false",
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            WORLD_SIZE="2",
        )
        cmd = [sys.executable, "-m", "generalist.bench.evaluate", "--zero3-worker", str(model_dir)]
        cmd += [str(out), "--examples", str(args.zero3_examples), "--options", str(args.options)]
        procs = [
            subprocess.Popen(cmd, env={**env, "RANK": str(r), "LOCAL_RANK": str(r)})
            for r in range(2)
        ]
        if any(p.wait(timeout=1800) != 0 for p in procs):
            raise RuntimeError("bench evaluate: a ZeRO-3 rank failed (see its output above)")
        res = json.loads(out.read_text())
    fast, naive = res["fast"], res["naive"]
    equal = fast["texts"] == naive["texts"] and close(fast["scores"], naive["scores"])
    return fast["seconds"], naive["seconds"], equal


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="generalist bench evaluate", description=__doc__)
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--zero3-examples", type=int, default=16)
    parser.add_argument("--options", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--skip-zero3", action="store_true")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument(
        "--zero3-worker", nargs=2, metavar=("MODEL_DIR", "OUT"), help=argparse.SUPPRESS
    )
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    if args.zero3_worker:
        zero3_worker(*args.zero3_worker, args.examples, args.options)
        return 0
    import torch

    torch.manual_seed(0)
    kinds = local_kinds(args)
    counts = {k: args.examples for k in kinds}
    if not args.skip_zero3:
        kinds["zero3_periodic"] = zero3_kind(args)
        counts["zero3_periodic"] = args.zero3_examples
    result: dict[str, Any] = {"examples": args.examples, "options": args.options}
    for kind, (t_fast, t_naive, equal) in kinds.items():
        n = counts[kind]
        result[f"examples_per_s_{kind}_fast"] = round(n / t_fast, 3)
        result[f"examples_per_s_{kind}_naive"] = round(n / t_naive, 3)
        result[f"vs_naive_{kind}"] = round(t_naive / t_fast, 3)
        result[f"equal_{kind}"] = equal
        print(
            f"{kind:<18} fast {n / t_fast:8.2f} ex/s  naive {n / t_naive:8.2f} ex/s  "
            f"x{t_naive / t_fast:.2f}  equal={equal}"
        )
    line = json.dumps(result)
    if args.out is not None:
        args.out.write_text(line + "\n")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
