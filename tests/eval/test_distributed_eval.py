"""A two-rank evaluation (torch.distributed, gloo, two processes) equals the one-rank one, with
a real tiny LLaVA: same predictions, same option scores, same metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from generalist.catalog.loading import import_user_module

from support import EVAL_TASKS, rank_eval
from support.deepspeed_runs import free_port

eval_tasks = import_user_module(str(EVAL_TASKS))


def _run_two_ranks(
    model_dir: Path, out: Path, script_name: str = "rank_eval.py", timeout: int = 300
) -> dict:
    script = str(Path(rank_eval.__file__).with_name(script_name))  # tests/support/<script>
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    env.update(
        OMP_NUM_THREADS="1",
        TOKENIZERS_PARALLELISM="false",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(free_port()),
        WORLD_SIZE="2",
    )
    procs = [
        subprocess.Popen(
            [sys.executable, script, str(model_dir), str(out)],
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
        )
        for r in range(2)
    ]
    for p in procs:
        assert p.wait(timeout=timeout) == 0
    return json.loads(out.read_text())


@pytest.mark.slow
def test_two_ranks_equal_one_rank(tmp_path: Path) -> None:
    model_dir = eval_tasks.tiny_model_dir(tmp_path / "model")
    rank_eval.main(str(model_dir), str(tmp_path / "one.json"))  # one rank, in this process
    one = json.loads((tmp_path / "one.json").read_text())
    two = _run_two_ranks(model_dir, tmp_path / "two.json")
    assert one["tables"].keys() == two["tables"].keys()
    for name, rows in one["tables"].items():
        assert [r["id"] for r in rows] == [r["id"] for r in two["tables"][name]]  # once each
        assert rows == two["tables"][name], name
    assert one["metrics"].keys() == two["metrics"].keys()
    for key, value in one["metrics"].items():
        assert two["metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert "eval/eval_shapes/macro_auc" in one["metrics"]  # option scoring ran on the model
    shapes = one["tables"]["predictions/eval_shapes/step-0"]
    assert len(shapes) == 7 and any(r["prediction"] for r in shapes)  # it did generate text


@pytest.mark.slow
def test_zero3_evaluation_gathers_once_with_the_per_token_predictions(tmp_path: Path) -> None:
    """ZeRO-3 on two ranks: the pass on the model gathered once gives the predictions, option
    scores and metrics of the per-token gathers (synced_gpus) it replaces."""
    model_dir = eval_tasks.tiny_model_dir(tmp_path / "model")
    # the per-token pass is the slow one it replaces (about 200 s on a busy 2-core machine)
    runs = _run_two_ranks(model_dir, tmp_path / "zero3.json", "zero3_eval.py", timeout=900)
    slow, fast = runs["per_token"], runs["gathered"]
    assert slow["tables"].keys() == fast["tables"].keys() and slow["tables"]
    for name, rows in slow["tables"].items():
        assert rows == fast["tables"][name], name
    assert slow["metrics"].keys() == fast["metrics"].keys()
    for key, value in slow["metrics"].items():
        assert fast["metrics"][key] == pytest.approx(value, abs=1e-6), key
    assert "eval/eval_shapes/macro_auc" in fast["metrics"]
    assert any(r["prediction"] for r in fast["tables"]["predictions/eval_shapes/step-0"])
