"""Own data end to end: a flat CSV task and a conversation JSONL task declared in YAML, sharded
with --skip-bad past a bad row, trained in one 2-rank DeepSpeed launch (the run config imports
the YAML), then scored by `generalist evaluate` with the metrics of each task's kind."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from generalist.cli import main as cli_main

from support import deepspeed_runs as runs
from support.own_data import declared_scope, make_folder

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def own_names() -> Iterator[None]:
    with declared_scope():  # the clinic_* names are also declared by tests/sources' folder
        yield


def test_own_csv_and_jsonl_tasks_shard_train_on_two_ranks_and_evaluate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "clinic"
    declarations = make_folder(data)
    with open(data / "chat.jsonl", "a") as file:
        file.write("{not json\n")  # a bad line: counted and skipped
    shards = tmp_path / "shards"
    for task in ("clinic_diagnosis", "clinic_chat"):
        argv = ["shard", task, "--import", str(declarations), "--out", str(shards)]
        assert cli_main([*argv, "--image-size", "32", "--no-progress", "--skip-bad"]) == 0
    printed = capsys.readouterr().out
    (chat_train,) = [line for line in printed.splitlines() if line.startswith("clinic_chat/train")]
    assert chat_train.startswith("clinic_chat/train: 17 records") and chat_train.endswith(
        "skipped 1"
    )
    config = tmp_path / "run.yaml"
    out = tmp_path / "run"
    config.write_text(
        yaml.safe_dump(
            {
                "imports": [str(declarations)],
                "tasks": {"clinic_diagnosis": 1.0, "clinic_chat": 1.0},
                "shards": str(shards),
                "model": {
                    "tiny": {
                        "vision_layers": 1,
                        "text_layers": 2,
                        "hidden_size": 32,
                        "heads": 2,
                        "image_size": 32,
                        "patch_size": 16,
                        "vocab_size": 200,
                    }
                },
                "lora": {"enabled": False},
                "deepspeed": 2,
                "optim": {"lr": 3e-3, "warmup_steps": 1, "decay": "constant"},
                "batch": {"micro_batch_size": 4, "max_length": 96},
                "steps": 4,
                "output_dir": str(out),
                "checkpoint": {"every": 0},
                "logging": {"every": 1, "mlflow": False},
            }
        )
    )
    runs.finish(runs.launch(config), config)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    seen = {k for r in steps for k in r if k.endswith("/loss") and k != "train/loss"}
    assert seen == {"train/clinic_diagnosis/loss", "train/clinic_chat/loss"}
    capsys.readouterr()
    argv = ["evaluate", str(config), "--checkpoint", str(out / "checkpoints"), "--no-mlflow"]
    assert cli_main([*argv, "--max-examples", "4", "--max-new-tokens", "4"]) == 0
    printed = capsys.readouterr().out
    metrics = dict(line.split("\t") for line in printed.splitlines() if line.startswith("eval/"))
    for key in ("clinic_diagnosis/accuracy", "clinic_diagnosis/macro_auc", "clinic_chat/bleu1"):
        value = float(metrics[f"eval/{key}"])
        assert 0.0 <= value <= 1.0 or math.isnan(value), (key, value)
    assert not any("clinic_chat/macro_auc" in k or "diagnosis/bleu1" in k for k in metrics)
