"""`generalist demo`: the end-to-end demo on easy-vqa data, on a laptop's CPU.

    generalist demo [--out demo_out] [--ranks 2] [--warmup-steps N] [--lora-steps N]

1. shards easy-vqa (questions, and images with the shape/colour their questions establish),
2. stage 0: pretrains the tiny vision tower on the train images' shape and colour labels
   (`generalist pretrain-vision`; real LLaVA starts from a pretrained CLIP: a tower trained
   from scratch through the language model learns colour but not shape in a CPU budget),
3. stage 1: a short full warm-up of a tiny LLaVA built from config, the pretrained tower frozen
   (a model trained from scratch cannot learn through LoRA alone: its random language model
   has nothing to adapt),
4. stage 2: LoRA fine-tuning from the warm-up (LoRA on the language model's attention and MLP,
   the projector trained, the tower frozen), both under the DeepSpeed launcher (ZeRO-2, CPU
   ranks over gloo),
5. evaluates every task on its test split: the LoRA model, the warm-up, the untrained model, and
   the majority answer of the train split, each as an MLflow run,
6. prints the leaderboard, saves it (markdown, csv, png) with the training curve, and says where
   to open the MLflow UI.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from generalist.catalog.loading import load_catalog
from generalist.catalog.mixture import MIXTURES
from generalist.catalog.records import DATASETS
from generalist.catalog.task import TASKS
from generalist.cli.evaluate import evaluation_run_name, resolve_checkpoint
from generalist.cli.leaderboard import main as leaderboard_main
from generalist.errors import DataError, GeneralistError
from generalist.eval.baselines import majority_answer
from generalist.model.build import build_model
from generalist.model.model_dir import save_model_dir
from generalist.shards.manifest import load_manifest, read_records
from generalist.shards.writer import write_dataset
from generalist.tracking.plots import plot_training_curve
from generalist.tracking.run_kinds import primary_metric_tags
from generalist.tracking.tracker import Tracker
from generalist.train.config import load_config
from generalist.train.setup import tokenizer_texts
from generalist.train.vision_pretrain import RESULT_FILE, accuracy_line, pretrain_vision

DEMO_CONFIGS = ("demo.yaml", "demo_lora.yaml")
DEMO_DATASETS = ("easy_vqa", "easy_vqa_images")
IMAGE_SIZE = 32  # easy-vqa's 64 px shapes stay clear at 32 px; 4 px patches
VISION_FIELDS = ("shape", "color")


def run(cmd: list[str], log: Path) -> None:
    """Run one stage as its own process (the deepspeed launcher needs that), its output teed."""
    print("$ " + " ".join(cmd), flush=True)
    with log.open("w") as sink:
        process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert process.stdout is not None
        for line in process.stdout:
            sink.write(line)
            if not any(noise in line for noise in ("[WARNING]", "[INFO]", "Warning", "warn(")):
                print("  " + line, end="", flush=True)
        if process.wait() != 0:
            raise GeneralistError(f"stage failed (exit {process.returncode}); full log: {log}")


def generalist_cmd(ranks: int, *args: str) -> list[str]:
    """`generalist ARGS` in this interpreter, under the deepspeed launcher when ranks > 1."""
    if ranks > 1:
        launcher = str(Path(sys.executable).with_name("deepspeed"))
        return [launcher, "--num_gpus", str(ranks), "--module", "generalist.cli", *args]
    return [sys.executable, "-m", "generalist.cli", *args]


def shard_demo_data(shards: Path) -> None:
    """Shard the demo datasets unless a complete copy with the demo's image size is there."""
    for name in DEMO_DATASETS:
        try:
            written = load_manifest(shards, name)["image_policy"].get("size") == IMAGE_SIZE
        except DataError:  # not written yet (or incomplete): write it
            written = False
        if written:
            print(f"shards of {name} already written: {shards / name}")
            continue
        source = DATASETS.get(name).default_source()
        write_dataset(name, source, shards, image_size=IMAGE_SIZE)


def majority_baseline(shards: Path, out: Path, tracking_uri: str, max_examples: int) -> None:
    """Score the train split's most common target on each task's test split, as an MLflow run."""
    tracker = Tracker(
        out,
        tracking_uri=tracking_uri,
        experiment="demo",
        run_name="majority-answer",
        kind="baseline",
    )
    tasks = [TASKS.get(name) for name in MIXTURES.get("demo").rates()]
    tracker.set_tags(primary_metric_tags(tasks))
    for task in tasks:
        name = task.name
        train = read_records(shards, task.dataset, "train")
        held_out = read_records(shards, task.dataset, task.eval_split)
        majority, metrics = majority_answer(task, train, itertools.islice(held_out, max_examples))
        tracker.log_metrics({f"eval/{name}/{k}": v for k, v in metrics.items()}, step=0)
        print(f"majority answer of {name}: {majority!r} -> {metrics}")
    tracker.close()


def pretrain_tower(config: Path, overrides: list[str], shards: Path, out: Path, steps: int) -> None:
    """Stage 0 in this process (one small model: no launcher needed); a finished tower of the
    same steps and sizes is reused."""
    tiny = load_config(config, overrides).model.tiny
    assert tiny is not None
    tiny = tiny.model_copy(update={"vision_init": None})
    done = out / RESULT_FILE
    if done.is_file():
        result = json.loads(done.read_text())
        if result.get("steps") == steps and result.get("tiny") == tiny.model_dump():
            print(f"vision tower already pretrained: {out}")
            return
    result = pretrain_vision(tiny, shards, "easy_vqa_images", VISION_FIELDS, out, steps)
    print(f"vision tower: {accuracy_line(result)}")


def save_untrained(config: Path, overrides: list[str], out: Path) -> Path:
    """The warm-up's model before any step (same seed and tokenizer), for the untrained row."""
    import torch

    cfg = load_config(config, overrides)
    torch.manual_seed(cfg.seed)
    texts = tokenizer_texts(MIXTURES.get("demo"), cfg.shards)
    bundle = build_model(cfg.model, cfg.lora, texts_for_tokenizer=texts, work_dir=out / "work")
    save_model_dir(bundle, out / "model")
    return out / "model"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="generalist demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", type=Path, default=Path("demo_out"))
    parser.add_argument("--ranks", type=int, default=2, help="DeepSpeed CPU ranks (gloo)")
    parser.add_argument("--vision-steps", type=int, default=500, help="tower pretraining steps")
    parser.add_argument("--warmup-steps", type=int, help="default: configs/demo.yaml's steps")
    parser.add_argument("--lora-steps", type=int, help="default: configs/demo_lora.yaml's steps")
    parser.add_argument("--eval-examples", type=int, default=200, help="per task, test split")
    parser.add_argument(
        "--configs", type=Path, default=Path("configs"), help="holds demo.yaml and demo_lora.yaml"
    )
    args = parser.parse_args(argv)
    if args.ranks < 1:
        raise GeneralistError(f"--ranks must be >= 1, got {args.ranks}")
    missing = [name for name in DEMO_CONFIGS if not (args.configs / name).is_file()]
    if missing:
        raise GeneralistError(
            f"--configs {args.configs}: no {', '.join(missing)} there; run the demo from the "
            f"repository root (bash launch/demo.sh) or pass --configs REPO/configs"
        )
    configs = args.configs.resolve()
    load_catalog()
    started = time.monotonic()
    out = args.out.resolve()
    shards, logs = out / "shards", out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    tracking_uri = f"sqlite:///{out / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # every stage logs to the demo's store
    common = [f"shards={shards}", f"logging.tracking_uri={tracking_uri}", "logging.experiment=demo"]
    vision = out / "vision"
    warmup = [
        *common,
        f"output_dir={out / 'warmup'}",
        "logging.run_name=warm-up",
        f"model.tiny.vision_init={vision}",
    ]
    if args.warmup_steps:
        warmup.append(f"steps={args.warmup_steps}")

    print(f"== 1/6 shards -> {shards}")
    shard_demo_data(shards)
    print("== 2/6 stage 0: the vision tower, pretrained on the train images' labels")
    pretrain_tower(configs / "demo.yaml", warmup, shards, vision, args.vision_steps)
    print("== 3/6 stage 1: full warm-up of a tiny LLaVA, the pretrained tower frozen")
    run(
        generalist_cmd(args.ranks, "train", str(configs / "demo.yaml"), *warmup),
        logs / "warmup.log",
    )
    warm_model = out / "warmup" / "checkpoints"
    print("== 4/6 stage 2: LoRA fine-tuning from the warm-up")
    lora = [
        *common,
        f"output_dir={out / 'lora'}",
        "logging.run_name=lora",
        f"model.name_or_path={resolve_model_dir(warm_model)}",
    ]
    if args.lora_steps:
        lora.append(f"steps={args.lora_steps}")
    run(
        generalist_cmd(args.ranks, "train", str(configs / "demo_lora.yaml"), *lora),
        logs / "lora.log",
    )

    print("== 5/6 evaluation on the test split of every task")
    untrained = save_untrained(configs / "demo.yaml", warmup, out / "untrained")
    evaluations = {
        "lora": out / "lora" / "checkpoints",
        "warm-up": warm_model,
        "untrained": untrained,
    }
    for name, checkpoint in evaluations.items():
        # "lora @ step-000080": an evaluation never shares its training run's name
        run_name = (
            name
            if name == "untrained"
            else evaluation_run_name(name, resolve_checkpoint(checkpoint))
        )
        cmd = generalist_cmd(
            args.ranks,
            "evaluate",
            str(configs / "demo.yaml"),
            *common,
            "--checkpoint",
            str(checkpoint),
            "--split",
            "test",
            "--max-examples",
            str(args.eval_examples),
            "--max-new-tokens",
            "12",  # the longest demo answer ("a yellow triangle.") is 5 tokens
            "--batch-size",
            "32",
            "--run-name",
            run_name,
            "--out",
            str(out / "eval" / name),
        )
        run(cmd, logs / f"eval-{name}.log")
    majority_baseline(shards, out / "eval" / "majority", tracking_uri, args.eval_examples)

    print("== 6/6 leaderboard")

    leaderboard_main(
        ["--tracking-uri", tracking_uri, "--experiment", "demo", "--out", str(out / "leaderboard")]
    )
    plot_training_curve(
        {"warm-up": out / "warmup", "LoRA": out / "lora"},
        out / "leaderboard" / "training_curve.png",
        title="generalist demo: full warm-up, then LoRA",
    )
    minutes = (time.monotonic() - started) / 60
    print(
        f"\ndemo finished in {minutes:.1f} min. Results: {out / 'leaderboard'} "
        f"(leaderboard.md, leaderboard.png, training_curve.png)"
    )
    print(
        f"MLflow UI: mlflow ui --backend-store-uri {tracking_uri}  (then open http://127.0.0.1:5000)"
    )
    return 0


def resolve_model_dir(checkpoints: Path) -> Path:
    """The model dir of the latest checkpoint under `checkpoints`."""
    return resolve_checkpoint(checkpoints) / "model"
