"""`generalist bench train`: training tokens/s, padding and (on a GPU) MFU, ours vs a plain loop.

    generalist bench train                      # shards a slice of easy-vqa into a temp dir
    generalist bench train --shards demo_out/shards --steps 20 --micro-batch-size 16 --group 16
    generalist bench train --config run.yaml [key=value ...]   # any training config's model/data
    generalist bench train --mixture spread     # MultiMedBench's length spread, built here

Both loops train the same model (by default a tiny LLaVA, 2+2 layers, width 64, on the demo
mixture; with --config that config's model, LoRA, data and batch) from the same initial weights,
one process, DeepSpeed (ZeRO-2 by default), same micro-batch size:
  ours   generalist.train's step (train_window): length-grouped micro-batches (windows of
         --group micro-batches), the loss normalised over the global batch, per-task accounting
         (LossMeter), lr schedule
  plain  the hand-written loop: DataLoader(stream, collate_fn=Collator), engine(**batch).loss,
         engine.backward, engine.step; no grouping
Short rounds (--steps steps) alternate between the two after warm-up steps; vs_plain_deepspeed is
the median over rounds of ours/plain tokens/s in adjacent rounds, so a busy machine slows both
alike. tokens/s counts real (attended) tokens; padding_fraction = padded positions / all.
Then --split-steps more steps of ours with the device synchronised at each phase boundary give
time_split_s: seconds per step in data (fetch, token counts, copy to the device), forward,
backward and optimizer. Targets: vs_plain_deepspeed >= 0.95 and padding_fraction < 0.10.

MFU (generalist.train.flops states the formula): model FLOPs of ours' measured steps (language
model, vision tower and connector; a frozen weight does no weight-gradient matmul) per second,
over the device's dense bf16 datasheet peak (`mfu`; H100/H200: 989 TFLOP/s) and over a bf16
matmul measured on the spot (`mfu_vs_measured_matmul`). Both only
on CUDA; model_tflops_per_s everywhere. The last line of output is one JSON object.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml

from generalist import distributed as dist
from generalist.batching.collate import Collator
from generalist.batching.model_inputs import model_inputs
from generalist.bench.stream import write_demo_shards
from generalist.catalog.loading import load_catalog
from generalist.catalog.mixture import Mixture
from generalist.mixing.stream import build_stream
from generalist.model.bundle import ModelBundle
from generalist.shards.writer import write_dataset
from generalist.train import flops
from generalist.train.config import TrainConfig, load_config
from generalist.train.deepspeed_config import filled_deepspeed_config
from generalist.train.preflight import check_config
from generalist.train.setup import setup_backends, setup_data, setup_engine, setup_model
from generalist.train.step import LossMeter, real_and_positions, train_window
from generalist.verbosity import quiet_libraries

Step = Callable[[], list[dict[str, Any]]]  # one step; returns the micro-batches it trained on
PHASES = ("data", "forward", "backward", "optimizer")


class PhaseTimer:
    """Seconds spent in each phase of training steps (data, forward, backward, optimizer).

    The device is synchronised at each phase boundary so that asynchronous CUDA work is counted
    in the phase that queued it; that costs a little, so only the bench times phases.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = dict.fromkeys(PHASES, 0.0)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.seconds[name] += time.perf_counter() - start


class TimedEngine:
    """The engine as train_window sees it, its calls timed: forward (__call__), backward and
    step (optimizer); the time between them is the data phase (token counts, copies to the
    device), so the training step itself carries no timer."""

    def __init__(self, engine: Any, timer: PhaseTimer) -> None:
        self._engine, self._timer = engine, timer

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def __call__(self, **inputs: Any) -> Any:
        with self._timer.phase("forward"):
            return self._engine(**inputs)

    def backward(self, loss: torch.Tensor) -> None:
        with self._timer.phase("backward"):
            self._engine.backward(loss)

    def step(self) -> None:
        with self._timer.phase("optimizer"):
            self._engine.step()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="generalist bench train", description=__doc__)
    parser.add_argument("--config", type=Path, help="a training config to bench (its model)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of --config")
    parser.add_argument("--shards", type=Path, help="shards of easy_vqa and easy_vqa_images")
    parser.add_argument("--limit", type=int, default=400, help="records sharded per dataset")
    parser.add_argument("--steps", type=int, default=2, help="measured steps per loop per round")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--split-steps", type=int, default=3, help="steps timed phase by phase")
    parser.add_argument("--micro-batch-size", type=int, default=8)
    parser.add_argument("--group", type=int, default=8, help="micro-batches per length window")
    parser.add_argument(
        "--peers",
        default="trl,budget,packed",
        help="loops beside ours and plain, comma-separated (trl, budget, packed; '' for none)",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=0,
        help="tokens per micro-batch of the token-budget and packed loops (0: micro-batch size x "
        "max_length); those loops take 4 x --micro-batch-size examples at most",
    )
    parser.add_argument(
        "--mixture",
        choices=("demo", "spread"),
        default="demo",
        help="demo: easy-vqa (one image, short answers); spread: MultiMedBench's length spread "
        "built here (one-word VQA, long two-image reports, text-only summaries)",
    )
    parser.add_argument("--verbose", action="store_true", help="the libraries' own logs")
    return parser.parse_args(argv)


SPREAD_TEXT = (
    "the lungs are clear no effusion or pneumothorax heart size is normal mediastinal contours "
    "stable mild degenerative change of the spine no focal consolidation small calcified "
    "granuloma in the left upper lobe unchanged from prior study"
)


def write_spread_data(root: Path, n: int) -> Path:
    """A tiny mixture with MultiMedBench's length spread, as own tasks (docs/own_data.md): a
    one-word VQA answer on one image, a long findings report on two images, a text-only
    summary of a long note; `n` rows each, images of random colours. Returns the YAML."""
    import csv
    import random

    from PIL import Image

    rng = random.Random(0)
    (root / "img").mkdir(parents=True, exist_ok=True)

    def image(name: str) -> str:
        colour = tuple(rng.randrange(256) for _ in range(3))
        Image.new("RGB", (64, 64), colour).save(root / "img" / name)
        return f"img/{name}"

    vocabulary = SPREAD_TEXT.split()

    def words(lo: int, hi: int) -> str:
        return " ".join(rng.choice(vocabulary) for _ in range(rng.randint(lo, hi)))

    rows = {
        "vqa": [
            (image(f"v{i}.png"), "is there an effusion?", rng.choice(["yes", "no"]))
            for i in range(n)
        ],
        "report": [
            (f"{image(f'a{i}.png')};{image(f'b{i}.png')}", "", words(40, 120)) for i in range(n)
        ],
        "summary": [("", words(60, 140), words(5, 15)) for _ in range(n)],
    }
    for name, table in rows.items():
        with open(root / f"{name}.csv", "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["image", "text", "answer", "split"])
            out.writerows([*r, "train"] for r in table)
    declared = root / "spread.yaml"

    def task(name: str, kind: str, rate: float, fields: dict[str, str], words: str) -> dict:
        data = f"{name.removeprefix('spread_')}.csv"
        own = {"name": name, "kind": kind, "data": data, "rate": rate, "shots": 0}
        return own | {"fields": fields | {"split": "split"}, "instructions": [words]}

    declarations = {
        "own_tasks": [
            task(
                "spread_vqa",
                "vqa",
                0.5,
                {"image": "image", "question": "text", "answer": "answer"},
                "Answer the question about the image.",
            ),
            task(
                "spread_report",
                "report_generation",
                0.25,
                {"image": "image", "report": "answer"},
                "Write the findings of the two views.",
            ),
            task(
                "spread_summary",
                "summarization",
                0.25,
                {"context": "text", "answer": "answer"},
                "Summarize the clinical note.",
            ),
        ],
        "own_mixture": {"name": "spread"},
    }
    declared = root / "spread.yaml"
    declared.write_text(yaml.safe_dump(declarations))
    return declared


def bench_config(shards: Path, out: Path, args: argparse.Namespace) -> TrainConfig:
    """The demo mixture on a tiny LLaVA (smaller than the demo's, so the bench takes seconds),
    or --config with its overrides; either way no MLflow, output in the temp dir."""
    if args.config is not None:
        cfg = load_config(args.config, args.overrides)
        logging = cfg.logging.model_copy(update={"mlflow": False})
        update = {"output_dir": out, "steps": 10**6, "logging": logging, "resume": None}
        return cfg.model_copy(update=update)
    tiny = {"vision_layers": 2, "text_layers": 2, "hidden_size": 64, "heads": 4}
    tiny |= {"image_size": 64, "patch_size": 16, "vocab_size": 2000}
    spread = args.mixture == "spread"
    batch = {"micro_batch_size": args.micro_batch_size, "max_length": 320 if spread else 192}
    imports = {"imports": [str(shards.parent / "spread" / "spread.yaml")]} if spread else {}
    return TrainConfig.model_validate(
        {
            **imports,
            "mixture": args.mixture,
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
) -> Step:
    """The hand-written DeepSpeed loop a user would write first; returns one-step closure."""
    import deepspeed
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

    def step() -> list[dict[str, Any]]:
        done = []
        for _ in range(cfg.batch.grad_accum):
            batch = next(batches)
            inputs = {k: v.to(device) for k, v in model_inputs(batch).items()}
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
            engine.backward(engine(**inputs).loss)
            engine.step()
            done.append(batch)
        return done

    return step


def trl_figures(
    cfg: TrainConfig,
    mixture: Mixture,
    bundle: ModelBundle,
    model: torch.nn.Module,
    precision: str,
    warmup: int,
    steps: int,
) -> dict[str, float] | None:
    """TRL's SFTTrainer (what MedGemma's fine-tuning notebook uses) on the same model copy, data
    (the same stream and Collator, as that notebook's own collate_fn) and hyperparameters: its
    own loop, so it is timed once, `steps` steps after `warmup`, from one step's end to the
    last's (data loading included). None, with one line saying so, without trl installed."""
    try:
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import SFTConfig, SFTTrainer
    except ImportError:
        print("trl: skipped (not installed; pip install trl, or the bench extra)")
        return None
    micro, accum = cfg.batch.micro_batch_size, cfg.batch.grad_accum
    collator = Collator(bundle, cfg.batch.max_length)
    seen: list[tuple[float, float]] = []

    stream = build_stream(mixture, cfg.shards, "train", cfg.seed, 0, 1, batch_size=micro)
    examples = iter(stream)

    def collate(rows: list) -> dict[str, Any]:
        # the rows are placeholders: the examples come from the mixture stream, in its order
        batch = collator([next(examples) for _ in rows])
        mask = batch["attention_mask"]
        seen.append((float(mask.sum()), float(mask.numel())))
        return model_inputs(batch)

    ends: list[float] = []

    class Clock(TrainerCallback):
        def on_step_end(self, *_args: object, **_kwargs: object) -> None:
            ends.append(time.perf_counter())

    with tempfile.TemporaryDirectory(prefix="bench-trl-") as out:
        args = SFTConfig(
            output_dir=out,
            per_device_train_batch_size=micro,
            gradient_accumulation_steps=accum,
            max_steps=warmup + steps,
            learning_rate=cfg.optim.lr,
            lr_scheduler_type="constant",
            logging_steps=10**6,
            save_strategy="no",
            report_to=[],
            bf16=precision == "bf16",
            fp16=precision == "fp16",
            dataloader_num_workers=0,
            remove_unused_columns=False,
            dataset_kwargs={"skip_prepare_dataset": True},
            seed=cfg.seed,
        )
        # SFTTrainer takes a datasets Dataset: one placeholder row per example it will draw
        rows = Dataset.from_dict({"row": list(range(micro * accum * (warmup + steps)))})
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=rows,
            data_collator=collate,
            processing_class=bundle.tokenizer,
            callbacks=[Clock()],
        )
        trainer.train()
    if len(ends) < warmup + steps or steps < 1:
        raise RuntimeError(f"trl ran {len(ends)} steps, not {warmup + steps}")
    first = max(warmup, 1)  # the clock starts at the end of a step
    measured = seen[first * accum : (warmup + steps) * accum]
    seconds = ends[warmup + steps - 1] - ends[first - 1]
    real, positions = sum(r for r, _ in measured), sum(p for _, p in measured)
    return {"real": real, "positions": positions, "seconds": seconds}


def our_loop(
    cfg: TrainConfig,
    mixture: Mixture,
    bundle: ModelBundle,
    device: torch.device,
    precision: str,
    model: torch.nn.Module | None = None,
) -> Callable[[PhaseTimer | None], list[dict[str, Any]]]:
    """generalist.train's setup and step body; a one-step closure (phases timed by `timer`)."""
    engine = setup_engine(cfg, bundle.model if model is None else model, precision)
    _, batches = setup_data(cfg, mixture, bundle, None)
    meter = LossMeter([name for name, _ in mixture.tasks], device)
    calls, engine_before = [0], [0.0]

    def step(timer: PhaseTimer | None = None) -> list[dict[str, Any]]:
        start = time.perf_counter()
        window = [next(batches) for _ in range(cfg.batch.grad_accum)]
        mode = cfg.batch.loss_normalization
        timed = engine if timer is None else TimedEngine(engine, timer)
        train_window(timed, window, mode, device, precision, meter)
        if timer is not None:  # data: all but the engine's own calls
            engine_s = sum(timer.seconds[p] for p in PHASES[1:])
            timer.seconds["data"] += time.perf_counter() - start - (engine_s - engine_before[0])
            engine_before[0] = engine_s
        calls[0] += 1
        if calls[0] % 10 == 0:
            meter.summary(engine.get_lr()[0])  # what logging.every=10 costs
        return [m.batch for m in window]

    return step


def budget_variants(
    cfg: TrainConfig, max_tokens: int, mixture: Mixture, bundle: ModelBundle
) -> dict[str, TrainConfig]:
    """The token-budget and packed loops' configs ("budget", "packed"); a family packing
    refuses is left out with one line saying why."""
    from generalist.batching.packing import check_packable
    from generalist.batching.token_layout import layout_for
    from generalist.errors import ConfigError

    budget = max_tokens or cfg.batch.micro_batch_size * cfg.batch.max_length
    cap = 4 * cfg.batch.micro_batch_size
    out = {}
    for name, packing in (("budget", False), ("packed", True)):
        batch = cfg.batch.model_copy(
            update={"max_tokens": budget, "packing": packing, "micro_batch_size": cap}
        )
        out[name] = cfg.model_copy(update={"batch": batch})
    try:
        model_type = str(getattr(bundle.base_model.config, "model_type", "?"))
        check_packable(layout_for(bundle).kind, model_type, cfg.model.attn_implementation)
    except ConfigError as err:
        print(f"packed: skipped ({err})")
        del out["packed"]
    return out


def measure(
    step: Step, n: int, totals: dict[str, float], on_batch: Callable[[dict], None] | None = None
) -> None:
    """Run `n` steps; add real tokens, positions and seconds; then `on_batch` on every batch
    (outside the timed region)."""
    seen = []
    start = time.perf_counter()
    for _ in range(n):
        seen.extend(step())
    totals["seconds"] += time.perf_counter() - start
    for batch in seen:
        real, positions = real_and_positions(batch)
        totals["real"] += real
        totals["positions"] += positions
        if on_batch is not None:
            on_batch(batch)


def significant(value: float, digits: int = 4) -> float:
    """`value` to `digits` significant digits: rates span 1e-6 (a tiny model on a busy CPU)
    to 1e3 (TFLOP/s on a GPU), and a fixed number of decimals would report a positive rate as 0."""
    return float(f"{value:.{digits}g}")


def mfu_figures(model_flops: float, seconds: float, device: torch.device) -> dict[str, Any]:
    """Model TFLOP/s, and on CUDA the MFU over the datasheet and the measured bf16 peaks."""
    per_s = model_flops / max(seconds, 1e-9)
    out: dict[str, Any] = {"model_tflops_per_s": significant(per_s / 1e12)}
    if device.type != "cuda":
        return out
    name = torch.cuda.get_device_name(device)
    measured = flops.measured_matmul_peak(device)
    out |= {"gpu": name, "peak_tflops_measured_matmul": round(measured / 1e12, 1)}
    out["mfu_vs_measured_matmul"] = significant(per_s / measured)
    datasheet = flops.dense_bf16_peak(name)
    if datasheet is not None:
        out |= {"peak_tflops_datasheet": datasheet / 1e12, "mfu": significant(per_s / datasheet)}
    out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    print(json.dumps(bench(parse_args(argv))))
    return 0


def bench(args: argparse.Namespace) -> dict[str, Any]:
    """Run the benchmark (printing a per-loop table); returns the summary."""
    quiet_libraries(args.verbose)
    load_catalog()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        shards = args.shards
        if shards is None and args.config is None:
            shards = Path(tmp) / "shards"
            if args.mixture == "spread":
                declared = write_spread_data(Path(tmp) / "spread", args.limit)
                load_catalog([str(declared)])
                for name in ("spread_vqa", "spread_report", "spread_summary"):
                    write_dataset(name, None, shards, splits=["train"], image_size=64,
                                  progress=False)  # fmt: skip
            else:
                write_demo_shards(shards, args.limit)
        cfg = bench_config(shards or Path(tmp), Path(tmp) / "run", args)
        mixture = check_config(cfg)
        device = dist.init_distributed()
        quiet_libraries(args.verbose or cfg.logging.verbose)
        precision = dist.auto_precision(cfg.precision)
        setup_backends(cfg, device)
        bundle = setup_model(cfg, mixture)
        costs = flops.part_costs(bundle.model)
        plain_model = copy.deepcopy(bundle.model)  # same initial weights for every loop
        trl_model = copy.deepcopy(bundle.model)
        peers = {p.strip() for p in args.peers.split(",") if p.strip()}
        variants = budget_variants(cfg, args.max_tokens, mixture, bundle)
        variants = {k: v for k, v in variants.items() if k in peers}
        models = {name: copy.deepcopy(bundle.model) for name in variants}  # same weights
        ours = our_loop(cfg, mixture, bundle, device, precision)
        loops = {"plain": plain_loop(cfg, mixture, bundle, plain_model, device, precision)}
        loops["ours"] = ours
        for name, variant in variants.items():
            loops[name] = our_loop(variant, mixture, bundle, device, precision, models[name])
        blank = {"real": 0.0, "positions": 0.0, "seconds": 0.0}
        totals = {k: dict(blank) for k in loops}
        for step in loops.values():
            measure(step, args.warmup, dict(blank))
        work: dict[str, flops.PartTokens] = {}
        config, image_id = bundle.base_model.config, bundle.image_token_id

        def count(batch: dict[str, Any]) -> None:
            flops.add_work(work, flops.batch_work(config, batch, image_id))

        ratios = []
        for _ in range(args.rounds):
            speed = {}
            for name, step in loops.items():
                one = dict(blank)
                measure(step, args.steps, one, count if name == "ours" else None)
                speed[name] = one["real"] / one["seconds"]
                totals[name] = {k: totals[name][k] + v for k, v in one.items()}
            ratios.append(speed["ours"] / speed["plain"])
        trl = None
        if "trl" in peers:
            n = args.rounds * args.steps
            trl = trl_figures(cfg, mixture, bundle, trl_model, precision, args.warmup, n)
        if trl is not None:
            totals["trl"] = trl
        timer = PhaseTimer(device)
        measure(lambda: ours(timer), args.split_steps, dict(blank))
        split = {k: significant(v / max(args.split_steps, 1)) for k, v in timer.seconds.items()}
        model_flops = flops.step_flops(costs, work)
        factor = model_flops / max(flops.forward_flops(costs, work), 1.0)
        mfu = mfu_figures(model_flops, totals["ours"]["seconds"], device)
    result: dict[str, Any] = {}
    for name, t in totals.items():
        speed, pad = t["real"] / t["seconds"], 1 - t["real"] / t["positions"]
        print(f"{name:<6} {speed:10.0f} tokens/s  padding {pad:6.1%}  ({t['seconds']:.1f} s)")
        result[name] = {"tokens_per_s": round(speed, 1), "padding_fraction": round(pad, 4)}
    print("time per step (s): " + ", ".join(f"{k} {v:.4f}" for k, v in split.items()))
    for figures in result.values():  # real / computed tokens: 1 means no padding computed
        figures["utilization"] = round(1 - figures["padding_fraction"], 4)
    ours_r, plain = result["ours"], result["plain"]
    summary = {
        "tokens_per_s": ours_r["tokens_per_s"],
        "vs_plain_deepspeed": round(statistics.median(ratios), 3),
        "padding_fraction": ours_r["padding_fraction"],
        "plain_tokens_per_s": plain["tokens_per_s"],
        "plain_padding_fraction": plain["padding_fraction"],
        "loops": {k: v for k, v in result.items() if k not in ("ours", "plain")},
        "ours_vs_trl": (
            round(ours_r["tokens_per_s"] / result["trl"]["tokens_per_s"], 3)
            if "trl" in result
            else None
        ),
        "micro_batch_size": cfg.batch.micro_batch_size,
        "grad_accum": cfg.batch.grad_accum,
        "steps": args.steps * args.rounds,
        "device": str(device),
        "precision": precision,
        "time_split_s": split,
        "flops_factor": round(factor, 3),  # training / forward FLOPs (3 full, ~2 LoRA)
        "trainable_params": sum(c.trainable + c.patch_trainable for c in costs.values()),
        **mfu,
    }
    return summary
