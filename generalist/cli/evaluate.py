"""`generalist evaluate CONFIG --checkpoint DIR`: score a checkpoint on every task.

CONFIG is the training config (shards, tasks/mixture, eval and logging settings; `key=value`
overrides after it). DIR is a checkpoint (`<output_dir>/checkpoints/step-N`, its `model/`, or
`<output_dir>/checkpoints` for the latest). Results go to a new MLflow run named
`<training run> @ <checkpoint>` (e.g. `lora @ step-80`: never the training run's own name),
tagged generalist.kind=evaluation, generalist.checkpoint and generalist.evaluated_run (its files
in --out, default `<checkpoint>/eval`), logged at the checkpoint's step, and are printed one
line per metric. Prompts use the format the checkpoint trained with (`model.prompt_format` in
its model.json; --prompt-format overrides). Clinical report metrics read their weights from
`eval.scorers` (checked before the model is loaded).
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence
from pathlib import Path

from generalist import distributed as dist
from generalist.catalog.loading import load_catalog
from generalist.catalog.task import TASKS, Task
from generalist.errors import ConfigError
from generalist.eval.evaluate import ABLATIONS, check_ablations, evaluate_tasks
from generalist.eval.generation import HFPredictor
from generalist.eval.metrics.scorers import check_scorers
from generalist.eval.records import load_eval_records
from generalist.model.model_dir import find_model_dir, load_model_dir
from generalist.tracking.tracker import Tracker
from generalist.train.config import TrainConfig, load_config
from generalist.train.periodic_eval import eval_task_names
from generalist.verbosity import quiet_libraries


def resolve_checkpoint(path: Path) -> Path:
    """A checkpoint dir; `<...>/checkpoints` resolves to the one its `latest` file names."""
    if (path / "latest").is_file():
        path = path / (path / "latest").read_text().strip()
    if not path.is_dir():
        raise ConfigError(f"--checkpoint {path}: no such directory")
    return path


def checkpoint_step(path: Path) -> int:
    match = re.search(r"step-(\d+)", str(path))
    return int(match.group(1)) if match else 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="generalist evaluate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("config", type=Path, help="the training config (YAML)")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument("--tasks", nargs="+", default=[])
    parser.add_argument("--split", help="default: each task's evaluation split")
    parser.add_argument("--max-examples", type=int, help="default: every record of the split")
    parser.add_argument("--ablations", nargs="*", default=[], choices=ABLATIONS)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--max-new-tokens", type=int, help="default: each task's (its kind's unless it sets one)"
    )
    parser.add_argument(
        "--prompt-format",
        choices=("raw", "chat"),
        help="default: the format the checkpoint trained with (its model.json)",
    )
    parser.add_argument("--out", type=Path, help="run files (default: <checkpoint>/eval)")
    parser.add_argument("--run-name", help="MLflow run name (default: <training run> @ <step>)")
    parser.add_argument("--no-mlflow", action="store_true", help="metrics.jsonl only")
    parser.add_argument("--verbose", action="store_true", help="the libraries' own logs and bars")
    args = parser.parse_args(argv)

    # Everything checkable is checked before the model is loaded.
    cfg = load_config(args.config, args.overrides)
    load_catalog(cfg.imports)
    check_ablations(args.ablations)
    tasks: list[Task] = [TASKS.get(n) for n in eval_task_names(cfg, args.tasks)]
    ckpt = resolve_checkpoint(args.checkpoint)

    check_scorers(tasks, cfg.eval.scorers)
    find_model_dir(ckpt)
    records, pools = load_eval_records(tasks, cfg.shards, args.split, args.max_examples)

    quiet_libraries(args.verbose or cfg.logging.verbose)
    launched = "RANK" in __import__("os").environ
    if launched:
        dist.init_distributed()
    bundle = load_model_dir(ckpt)
    predictor = HFPredictor(
        bundle,
        cfg.batch.max_length,
        max_new_tokens=args.max_new_tokens,
        prompt_format=args.prompt_format,
    )
    tracker = None
    step = checkpoint_step(ckpt)
    if dist.is_main():
        tracker = make_tracker(cfg, args, ckpt)
        tracker.log_params(
            {
                "eval": {
                    "checkpoint": str(ckpt),
                    "tasks": [t.name for t in tasks],
                    "split": args.split or "task default",
                    "max_examples": args.max_examples,
                    "ablations": args.ablations,
                },
                "config": cfg.model_dump(mode="json"),
            }
        )
        tracker.log_artifact(args.config)
    values = evaluate_tasks(
        tasks,
        records,
        pools,
        predictor,
        seed=cfg.seed,
        batch_size=args.batch_size,
        ablations=args.ablations,
        tracker=tracker,
        step=step,
        scorers=cfg.eval.scorers,
    )
    if tracker is not None:
        tracker.close()
        for key in sorted(values):
            print(f"{key}\t{values[key]:.4f}")
    if launched:
        dist.barrier()
    return 0


def evaluation_run_name(training_run: str, ckpt: Path) -> str:
    """ "<training run> @ <checkpoint>" ("lora @ step-80"; a checkpoint's model/ dir names its
    step folder), so an evaluation never shares its training run's name."""
    where = ckpt.parent.name if ckpt.name == "model" and ckpt.parent.name else ckpt.name
    return f"{training_run} @ {where}"


def make_tracker(cfg: TrainConfig, args: argparse.Namespace, ckpt: Path) -> Tracker:
    """The evaluation's own MLflow run (see the module docstring)."""
    training_run = cfg.logging.run_name or cfg.output_dir.name
    return Tracker(
        args.out or ckpt / "eval",
        tracking_uri=cfg.logging.tracking_uri,
        experiment=cfg.logging.experiment,
        run_name=args.run_name or evaluation_run_name(training_run, ckpt),
        tags={"generalist.checkpoint": str(ckpt), "generalist.evaluated_run": training_run},
        mlflow=cfg.logging.mlflow and not args.no_mlflow,
        kind="evaluation",
    )
