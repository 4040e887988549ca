"""`generalist evaluate CONFIG --checkpoint DIR` end to end: shards, a saved tiny model, MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from generalist.catalog.loading import import_user_module
from generalist.cli import main as cli_main
from generalist.shards.writer import write_dataset

from support import EVAL_TASKS

eval_tasks = import_user_module(str(EVAL_TASKS))


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("evalcli")
    (root / "src").mkdir()
    for name in ("eval_colors", "eval_shapes", "eval_qa"):
        write_dataset(name, root / "src", root / "shards", image_size=32, progress=False)
    ckpt = root / "run" / "checkpoints" / "step-000004"
    eval_tasks.tiny_model_dir(ckpt / "model")
    (root / "run" / "checkpoints" / "latest").write_text("step-000004")
    uri = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
    config = {
        "imports": [str(EVAL_TASKS)],
        "tasks": {"eval_colors": 1.0, "eval_shapes": 1.0},
        "shards": str(root / "shards"),
        "model": {"tiny": eval_tasks.TINY},
        "output_dir": str(root / "run"),
        "batch": {"max_length": 256},
        "logging": {"tracking_uri": uri, "experiment": "evalcli"},
    }
    (root / "config.yaml").write_text(yaml.safe_dump(config))
    return {"root": root, "uri": uri, "config": root / "config.yaml"}


def test_evaluate_cli_logs_metrics_and_tables(setup: dict, capsys) -> None:
    root = setup["root"]
    argv = ["evaluate", str(setup["config"]), "--checkpoint", str(root / "run" / "checkpoints")]
    assert cli_main([*argv, "--max-examples", "5", "--ablations", "blank_image"]) == 0
    printed = capsys.readouterr().out
    assert "eval/eval_colors/bleu1\t" in printed and "eval/eval_shapes/macro_auc\t" in printed
    client = MlflowClient(setup["uri"])
    exp = client.get_experiment_by_name("evalcli").experiment_id
    (run,) = client.search_runs([exp])
    # "<training run> @ <checkpoint>": never the training run's own name
    assert run.info.run_name == "run @ step-000004" and run.info.status == "FINISHED"
    assert run.data.tags["generalist.kind"] == "evaluation"
    assert run.data.tags["generalist.evaluated_run"] == "run"
    assert run.data.tags["generalist.primary_metric.eval_shapes"] == "macro_auc"
    keys = set(run.data.metrics)
    assert {"eval/eval_colors/token_f1", "eval/eval_shapes/macro_f1"} <= keys
    assert "eval/eval_shapes/blank_image/accuracy" in keys
    history = client.get_metric_history(run.info.run_id, "eval/eval_shapes/accuracy")
    assert [m.step for m in history] == [4]  # logged at the checkpoint's step
    assert run.data.params["eval.max_examples"] == "5"
    arts = {a.path for a in client.list_artifacts(run.info.run_id, "tables/predictions")}
    assert arts == {"tables/predictions/eval_colors", "tables/predictions/eval_shapes"}
    rows = root / "run" / "checkpoints" / "step-000004" / "eval" / "tables" / "predictions"
    lines = (rows / "eval_colors" / "step-4.jsonl").read_text().splitlines()
    assert [json.loads(r)["id"] for r in lines] == [f"test-c{i}" for i in range(5)]


def test_evaluate_cli_errors_before_loading_the_model(setup: dict, capsys) -> None:
    root = setup["root"]
    base = ["evaluate", str(setup["config"]), "--checkpoint"]
    assert cli_main([*base, str(root / "nowhere")]) == 2
    assert "no such directory" in capsys.readouterr().err
    ckpt = str(root / "run" / "checkpoints")
    assert cli_main([*base, ckpt, "--tasks", "eval_colours"]) == 2
    assert "did you mean 'eval_colors'" in capsys.readouterr().err
    assert cli_main([*base, ckpt, "--split", "validation", "--tasks", "eval_qa"]) == 2
    assert "has no 'validation' split" in capsys.readouterr().err
    # a clinical report metric without its local scorer weights: the key is named, at once
    assert cli_main([*base, ckpt, "--tasks", "mimic_cxr_report"]) == 2
    err = capsys.readouterr().err
    assert "chexbert_micro_f1_14" in err and "set eval.scorers.chexbert=FOLDER" in err


def test_periodic_evaluation_for_the_trainer(setup: dict) -> None:
    from generalist.model.model_dir import load_model_dir
    from generalist.train.config import load_config
    from generalist.train.periodic_eval import periodic_evaluation

    overrides = ["eval.tasks=[eval_qa, eval_shapes]", "eval.split=test", "eval.max_examples=3"]
    cfg = load_config(setup["config"], overrides)
    bundle = load_model_dir(setup["root"] / "run" / "checkpoints" / "step-000004")
    bundle.model.train()
    cache: dict = {}
    first = periodic_evaluation(cfg, bundle, bundle.model, step=10, cache=cache)
    assert bundle.model.training  # put back in training mode
    assert {"eval/eval_qa/accuracy", "eval/eval_shapes/macro_auc"} <= set(first)
    assert [len(r) for r in cache["data"][0].values()] == [3, 3]  # records loaded once, kept
    assert periodic_evaluation(cfg, bundle, bundle.model, step=20, cache=cache) == first


def test_every_run_is_tagged_with_its_kind(setup: dict, monkeypatch, tmp_path: Path) -> None:
    """Training, evaluation, baseline and leaderboard runs each carry generalist.kind, so
    filtering the runs table by kind is complete."""
    import itertools

    from generalist.catalog.records import DATASETS
    from generalist.cli import demo
    from generalist.train.config import load_config
    from generalist.train.resume import open_run_log

    uri = setup["uri"]
    cfg = load_config(setup["config"], [f"output_dir={tmp_path / 'train'}"])
    open_run_log(cfg, 0).close()  # what `generalist train` opens on rank 0
    root = setup["root"]
    argv = ["evaluate", str(setup["config"]), "--checkpoint", str(root / "run" / "checkpoints")]
    assert cli_main([*argv, "--max-examples", "2", "--out", str(tmp_path / "eval")]) == 0

    def records(shards: Path, dataset: str, split: str):  # the demo data, without sharding it
        data = DATASETS.get(dataset)
        return itertools.islice(data.iter_records(data.default_source(), split), 40)

    monkeypatch.setattr(demo, "read_records", records)
    demo.majority_baseline(tmp_path / "shards", tmp_path / "majority", uri, max_examples=20)
    for experiment in ("evalcli", "demo"):
        board = ["leaderboard", "--tracking-uri", uri, "--experiment", experiment]
        assert cli_main([*board, "--out", str(tmp_path / f"board-{experiment}")]) == 0
    client = MlflowClient(uri)
    ids = [client.get_experiment_by_name(e).experiment_id for e in ("evalcli", "demo")]
    runs = client.search_runs(ids)
    kinds = sorted(r.data.tags.get("generalist.kind", "(none)") for r in runs)
    assert set(kinds) == {"training", "evaluation", "baseline", "leaderboard"}
    assert kinds.count("leaderboard") == 2 and kinds.count("baseline") == 1
    (baseline,) = [r for r in runs if r.data.tags["generalist.kind"] == "baseline"]
    assert baseline.info.run_name == "majority-answer"
    assert baseline.data.metrics["rank/mean"] == 1.0  # the only scored run of its experiment
    training = [r for r in runs if r.data.tags["generalist.kind"] == "training"]
    assert {r.info.run_name for r in training} == {"train"}
    assert not any(k.startswith("rank/") for r in training for k in r.data.metrics)
