"""Evaluate the tiny tasks under ZeRO-3 twice: with per-token gathers (synced_gpus, what
evaluation during training did) and with the model gathered once for the pass
(generalist.train.periodic_eval.whole_model). Rank 0 writes both runs' tables, metrics and
seconds as JSON. Used by tests/eval/test_distributed_eval.py and `generalist bench evaluate`.

python zero3_eval.py MODEL_DIR OUT_JSON [REPEAT]    (RANK/WORLD_SIZE/MASTER_* from the caller)
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from generalist import distributed
from generalist.bench.evaluate import zero3_engine
from generalist.catalog.loading import import_user_module
from generalist.catalog.task import TASKS
from generalist.eval.evaluate import evaluate_tasks
from generalist.eval.generation import HFPredictor
from generalist.train.periodic_eval import whole_model

HERE = Path(__file__).parent
rank_eval = import_user_module(str(HERE / "rank_eval.py"))


def main(model_dir: str, out: str, repeat: int = 1) -> None:
    distributed.init_distributed()
    tasks_mod = import_user_module(str(HERE / "eval_tasks.py"))
    names = rank_eval.NAMES
    records, pools = {}, {}
    for name in names:
        fn = tasks_mod._DATASETS[TASKS.get(name).dataset]
        records[name] = list(fn(Path("."), "test")) * repeat
        pools[name] = list(fn(Path("."), "train"))
    bundle, engine = zero3_engine(model_dir)
    tasks = [TASKS.get(n) for n in names]
    result: dict[str, Any] = {}
    for mode in ("per_token", "gathered"):
        capture = rank_eval.Capture()
        tracker = capture if distributed.is_main() else None
        distributed.barrier()
        start = time.perf_counter()
        if mode == "gathered":
            with whole_model(engine) as gathered:
                assert gathered, "the tiny model fits: the pass gathers it once"
                predictor = HFPredictor(
                    bundle, max_length=256, model=engine.module, synced_gpus=False
                )
                values = evaluate_tasks(
                    tasks, records, pools, predictor, batch_size=2, tracker=tracker
                )
        else:
            predictor = HFPredictor(bundle, max_length=256, model=engine.module, synced_gpus=True)
            values = evaluate_tasks(tasks, records, pools, predictor, batch_size=2, tracker=tracker)
        distributed.barrier()
        seconds = time.perf_counter() - start
        result[mode] = {"metrics": values, "tables": capture.tables, "seconds": seconds}
    result["examples"] = sum(len(r) for r in records.values())
    if distributed.is_main():
        Path(out).write_text(json.dumps(result))
    distributed.barrier()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 1)
