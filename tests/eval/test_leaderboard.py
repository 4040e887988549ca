"""The leaderboard ranks three logged runs task by task, writes md/csv/png and logs them."""

from __future__ import annotations

import csv
import json
import urllib.request
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient

from generalist.cli import main as cli_main
from generalist.eval.medpalm_m import MEDPALM_M
from generalist.tracking.tracker import Tracker

# run -> {task: primary metric value}. Ranks per task (1 best):
#   easy_vqa (bleu1):        A 0.9 -> 1, B 0.5 -> 3, C 0.7 -> 2
#   easy_vqa_shape (macro_auc): A 0.2 -> 3, B 0.8 -> 1, C 0.6 -> 2
#   vqa_rad (bleu1):         A 0.4, B 0.4 tie for ranks 1-2 -> 1.5 each; C has none
RUNS = {
    "run-a": {"easy_vqa": 0.9, "easy_vqa_shape": 0.2, "vqa_rad": 0.4},
    "run-b": {"easy_vqa": 0.5, "easy_vqa_shape": 0.8, "vqa_rad": 0.4},
    "run-c": {"easy_vqa": 0.7, "easy_vqa_shape": 0.6},
}
PRIMARY = {"easy_vqa": "bleu1", "easy_vqa_shape": "macro_auc", "vqa_rad": "bleu1"}
# Mean ranks: A (1 + 3 + 1.5) / 3, B (3 + 1 + 1.5) / 3, C (2 + 2) / 2 (no vqa_rad).
EXPECTED = {"run-a": 5.5 / 3, "run-b": 5.5 / 3, "run-c": 2.0}


@pytest.fixture
def logged(tmp_path: Path) -> str:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    for name, values in RUNS.items():
        tracker = Tracker(tmp_path / name, tracking_uri=uri, experiment="lb", run_name=name)
        # An earlier, worse evaluation: the leaderboard reads the latest one.
        tracker.log_metrics({f"eval/{t}/{PRIMARY[t]}": 0.0 for t in values}, step=1)
        metrics = {f"eval/{t}/{PRIMARY[t]}": v for t, v in values.items()}
        metrics["eval/easy_vqa/token_f1"] = 1.0 - values["easy_vqa"]  # not the primary metric
        tracker.log_metrics(metrics, step=2)
        tracker.close()
    return uri


def test_three_runs_ranked(logged: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "board"
    argv = ["leaderboard", "--tracking-uri", logged, "--experiment", "lb", "--out", str(out)]
    assert cli_main([*argv, "--reference", "medpalm-m"]) == 0
    printed = capsys.readouterr().out
    assert "| run-a |" in printed and "Med-PaLM M 84B (paper)" in printed
    with open(out / "leaderboard.csv") as f:
        rows = list(csv.DictReader(f))
    ranked = [r for r in rows if "paper" not in r["run"]]
    assert [r["run"] for r in ranked] == ["run-a", "run-b", "run-c"]  # ties keep run order
    for row in ranked:
        assert float(row["mean_rank"]) == pytest.approx(EXPECTED[row["run"]])
        assert float(row["easy_vqa"]) == RUNS[row["run"]]["easy_vqa"]
    assert ranked[2]["vqa_rad"] == ""  # run-c has no vqa_rad: unranked there
    paper = {r["run"]: r for r in rows if "paper" in r["run"]}
    assert float(paper["Med-PaLM M 562B (paper)"]["vqa_rad"]) == pytest.approx(0.7127)
    assert paper["Med-PaLM M 12B (paper)"]["easy_vqa"] == ""  # not a paper task
    assert (out / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # Logged as its own run, which the next leaderboard ignores.
    client = MlflowClient(logged)
    exp = client.get_experiment_by_name("lb").experiment_id
    (board,) = client.search_runs([exp], "tags.`generalist.kind` = 'leaderboard'")
    assert {a.path for a in client.list_artifacts(board.info.run_id)} >= {
        "leaderboard.md",
        "leaderboard.csv",
        "leaderboard.png",
    }
    assert cli_main([*argv, "--metric", "easy_vqa=token_f1", "--tasks", "easy_vqa"]) == 0
    with open(out / "leaderboard.csv") as f:
        assert [r["run"] for r in csv.DictReader(f)] == ["run-b", "run-c", "run-a"]


def test_errors_name_what_to_do(logged: str, tmp_path: Path, capsys) -> None:
    base = ["leaderboard", "--tracking-uri", logged, "--out", str(tmp_path / "x")]
    assert cli_main([*base, "--experiment", "nope"]) == 2
    assert "no MLflow experiment 'nope'" in capsys.readouterr().err
    assert cli_main([*base, "--experiment", "lb", "--metric", "vqa_rad"]) == 2
    assert "write TASK=METRIC" in capsys.readouterr().err
    missing = f"sqlite:///{tmp_path / 'none.db'}"
    assert cli_main(["leaderboard", "--tracking-uri", missing]) == 2
    assert "no MLflow database at" in capsys.readouterr().err
    assert not (tmp_path / "none.db").exists()


def test_reference_values_are_fractions_of_the_paper_percentages() -> None:
    assert MEDPALM_M["medqa"]["accuracy"] == (29.22, 46.11, 69.68)
    assert all(0 < v <= 100 for m in MEDPALM_M.values() for t in m.values() for v in t)


def test_runs_sharing_a_name_are_told_apart_only_when_both_are_scored() -> None:
    from generalist.eval.leaderboard import build_table

    scored = {"eval/easy_vqa/bleu1": 0.5}
    runs = [
        {"name": "warm-up", "run_id": "a" * 32, "metrics": {"train/loss": 0.1}},  # training run
        {"name": "warm-up", "run_id": "b" * 32, "metrics": scored},
        {"name": "lora", "run_id": "c" * 32, "metrics": {"eval/easy_vqa/bleu1": 0.7}},
        {"name": "lora", "run_id": "d" * 32, "metrics": {"eval/easy_vqa/bleu1": 0.6}},
    ]
    table = build_table(runs, {"easy_vqa": "bleu1"})
    assert list(table.index) == ["lora (cccccccc)", "lora (dddddddd)", "warm-up"]
    assert list(table["easy_vqa"]) == [0.7, 0.6, 0.5]


def _rest(server: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(
        f"{server}/api/2.0/mlflow/{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=30) as reply:
        return json.loads(reply.read())


def test_rank_metrics_on_the_runs_read_back_through_the_rest_api(
    mlflow_server: str, tmp_path: Path
) -> None:
    """After `generalist leaderboard` every ranked run carries rank/<task> and rank/mean: the
    MLflow runs table sorted by rank/mean is the leaderboard."""
    experiment = f"board-{uuid.uuid4().hex[:8]}"
    logged = {  # name -> (kind, metrics)
        "lora": ("training", {"train/loss": 0.5}),  # the training run: never ranked
        "lora @ step-80": ("evaluation", {"eval/easy_vqa/bleu1": 0.9, "eval/vqa_rad/bleu1": 0.3}),
        "warm-up @ step-160": (
            "evaluation",
            {"eval/easy_vqa/bleu1": 0.7, "eval/vqa_rad/bleu1": 0.6},
        ),
        "majority-answer": ("baseline", {"eval/easy_vqa/bleu1": 0.2}),
    }
    for name, (kind, values) in logged.items():
        tracker = Tracker(
            tmp_path / name,
            tracking_uri=mlflow_server,
            experiment=experiment,
            run_name=name,
            kind=kind,
        )
        tracker.log_metrics(values, step=1)
        tracker.close()
    out = tmp_path / "board"
    argv = ["leaderboard", "--tracking-uri", mlflow_server, "--experiment", experiment]
    assert cli_main([*argv, "--out", str(out)]) == 0
    with open(out / "leaderboard.csv") as f:
        board = [r["run"] for r in csv.DictReader(f)]
    # easy_vqa: lora 1, warm-up 2, majority 3; vqa_rad: warm-up 1, lora 2 -> lora 1.5, warm-up 1.5
    assert board == ["lora @ step-80", "warm-up @ step-160", "majority-answer"]

    found = _rest(mlflow_server, f"experiments/get-by-name?experiment_name={experiment}")
    search = {
        "experiment_ids": [found["experiment"]["experiment_id"]],
        "order_by": ["metrics.`rank/mean` ASC", "attributes.start_time ASC"],
        "max_results": 100,
    }
    runs = _rest(mlflow_server, "runs/search", search)["runs"]
    by_name = {
        r["info"]["run_name"]: {m["key"]: m["value"] for m in r["data"].get("metrics", [])}
        for r in runs
    }
    tags = {
        r["info"]["run_name"]: {t["key"]: t["value"] for t in r["data"].get("tags", [])}
        for r in runs
    }
    ranked = [r["info"]["run_name"] for r in runs if "rank/mean" in by_name[r["info"]["run_name"]]]
    assert ranked == board  # sorting the runs table by rank/mean is the leaderboard
    assert by_name["lora @ step-80"]["rank/easy_vqa"] == 1.0
    assert by_name["lora @ step-80"]["rank/vqa_rad"] == 2.0
    assert by_name["lora @ step-80"]["rank/mean"] == 1.5
    assert by_name["warm-up @ step-160"]["rank/mean"] == 1.5
    assert by_name["majority-answer"] == pytest.approx(
        {"eval/easy_vqa/bleu1": 0.2, "rank/easy_vqa": 3.0, "rank/mean": 3.0}
    )
    assert not any(k.startswith("rank/") for k in by_name["lora"])
    assert {n: t["generalist.kind"] for n, t in tags.items()} == {
        "lora": "training",
        "lora @ step-80": "evaluation",
        "warm-up @ step-160": "evaluation",
        "majority-answer": "baseline",
        "leaderboard": "leaderboard",
    }


def test_tasks_not_imported_are_ranked_from_their_runs_or_named(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    for name, score in (("a", 0.4), ("b", 0.8)):
        tracker = Tracker(tmp_path / name, tracking_uri=uri, experiment="plug", run_name=name)
        tracker.set_tags({"generalist.primary_metric.my_task": "score"})  # as evaluation does
        tracker.log_metrics({"eval/my_task/score": score, "eval/bare_task/f": 1 - score}, step=0)
        tracker.close()
    out = tmp_path / "board"
    base = ["leaderboard", "--tracking-uri", uri, "--out", str(out)]
    assert cli_main([*base, "--experiment", "plug"]) == 0
    captured = capsys.readouterr()
    assert "| my_task (score) |" in captured.out  # not registered here: read off its runs
    assert "bare_task" in captured.err and "--import MODULE" in captured.err
    assert "--metric bare_task=METRIC" in captured.err
    with open(out / "leaderboard.csv") as f:
        assert [r["run"] for r in csv.DictReader(f)] == ["b", "a"]
    assert cli_main([*base, "--experiment", "plug", "--metric", "bare_task=f"]) == 0
    assert "bare_task (f)" in capsys.readouterr().out
    assert cli_main([*base, "--experiment", "plug", "--tasks", "bare_task"]) == 2
    assert "pass --import MODULE" in capsys.readouterr().err
