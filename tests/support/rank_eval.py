"""Run evaluation of the tiny tasks with a saved tiny model; rank 0 writes the results as JSON.

python rank_eval.py MODEL_DIR OUT_JSON        (RANK/WORLD_SIZE/MASTER_* from the caller;
                                              none set: a world of one, no process group)
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import torch.distributed as dist

from generalist.catalog.loading import import_user_module
from generalist.catalog.task import TASKS
from generalist.eval.evaluate import evaluate_tasks
from generalist.eval.generation import HFPredictor
from generalist.model.model_dir import load_model_dir

NAMES = ["eval_shapes", "eval_qa"]  # image + text-only; generation and option scores


class Capture:
    """A tracker stand-in that keeps what evaluation logs."""

    def __init__(self) -> None:
        self.tables: dict[str, Any] = {}
        self.metrics: dict[str, float] = {}
        self.tags: dict[str, str] = {}

    def set_tags(self, tags: dict[str, str]) -> None:
        self.tags.update(tags)

    def log_table(self, name: str, rows: list[dict[str, Any]]) -> None:
        self.tables[name] = rows

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.update(metrics)


def main(model_dir: str, out: str) -> None:
    if "RANK" in os.environ:
        dist.init_process_group("gloo")
    tasks_mod = import_user_module(str(Path(__file__).with_name("eval_tasks.py")))
    records, pools = {}, {}
    for name in NAMES:
        fn = tasks_mod._DATASETS[TASKS.get(name).dataset]
        records[name] = list(fn(Path("."), "test"))
        pools[name] = list(fn(Path("."), "train"))
    bundle = load_model_dir(model_dir)
    predictor = HFPredictor(bundle, max_length=256, max_new_tokens=4)
    capture = Capture()
    tracker = capture if not dist.is_initialized() or dist.get_rank() == 0 else None
    values = evaluate_tasks(
        [TASKS.get(n) for n in NAMES], records, pools, predictor, batch_size=2, tracker=tracker
    )
    if tracker is not None:
        Path(out).write_text(json.dumps({"metrics": values, "tables": capture.tables}))
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
