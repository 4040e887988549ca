"""Evaluation: rank splitting, metrics from a fake predictor, ablation keys, option-score AUC."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import f1_score

from generalist.catalog.loading import import_user_module
from generalist.catalog.records import Example
from generalist.catalog.task import TASKS
from generalist.errors import ConfigError
from generalist.eval.evaluate import build_examples, evaluate_tasks, rank_share
from generalist.tracking.run_records import read_metrics
from generalist.tracking.tracker import Tracker

from support import EVAL_TASKS

eval_tasks = import_user_module(str(EVAL_TASKS))


def _is_blank(example: Example) -> bool:
    return any(not np.asarray(Image.open(io.BytesIO(b))).any() for b in example.images)


def _number(example: Example) -> int:
    return int(example.id.split("-")[1][1:])


class FakePredictor:
    """Right on even-numbered records, wrong on odd ones; 'blank' when the image is black.
    Option scores: the target highest (uniform for blank images)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def generate(self, examples: list[Example], max_new_tokens: int | None = None) -> list[str]:
        self.seen += [e.id for e in examples]
        out = []
        for e in examples:
            if _is_blank(e):
                out.append("blank")
            else:
                out.append(e.target if _number(e) % 2 == 0 else "nope")
        return out

    def score_options(self, examples: list[Example]) -> list[list[float]]:
        return [
            [0.0 if _is_blank(e) or o == e.target else -3.0 for o in e.options] for e in examples
        ]


def _data(names: list[str]) -> tuple[dict, dict]:
    records, pools = {}, {}
    for name in names:
        fn = eval_tasks._DATASETS[TASKS.get(name).dataset]
        records[name] = list(fn(Path("."), "test"))
        pools[name] = list(fn(Path("."), "train"))
    return records, pools


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_rank_share_covers_every_example_once_with_equal_counts(world: int) -> None:
    for n in range(0, 11):
        shares = [rank_share(n, r, world) for r in range(world)]
        assert len({len(s) for s in shares}) == 1  # same number of batches on every rank
        real = sorted(i for s in shares for i, pad in s if not pad)
        assert real == list(range(n))


def test_fixed_template_and_train_exemplars() -> None:
    task = TASKS.get("eval_colors")
    records, pools = _data(["eval_colors"])
    items = build_examples(task, records["eval_colors"], pools["eval_colors"], seed=0)
    assert all(i.example.template_index == 0 for i in items)
    assert all(i.example.prompt.startswith("Instructions: Answer the question.") for i in items)
    assert all(len(i.example.exemplar_ids) == 1 for i in items)
    assert all(x.startswith("train-") for i in items for x in i.example.exemplar_ids)
    again = build_examples(task, records["eval_colors"], pools["eval_colors"], seed=0)
    assert [i.example.prompt for i in items] == [i.example.prompt for i in again]


def test_metrics_ablations_and_auc_from_option_scores(tmp_path: Path) -> None:
    names = ["eval_colors", "eval_shapes", "eval_qa"]
    records, pools = _data(names)
    tracker = Tracker(tmp_path / "run", tracking_uri=f"sqlite:///{tmp_path / 'db' / 'm.db'}")
    predictor = FakePredictor()
    out = evaluate_tasks(
        [TASKS.get(n) for n in names],
        records,
        pools,
        predictor,
        batch_size=3,
        ablations=["shots0", "blank_image", "templates"],
        tracker=tracker,
        step=5,
    )
    tracker.close()
    # 7 test records; the fake is right on records 0, 2, 4, 6.
    assert out["eval/eval_colors/exact_match"] == pytest.approx(4 / 7)
    assert out["eval/eval_colors/exact_match_open"] == 1.0  # even records are the open ones
    assert out["eval/eval_colors/exact_match_closed"] == 0.0
    labels = [r.fields["label"] for r in records["eval_shapes"]]
    preds = [lab if i % 2 == 0 else "nope" for i, lab in enumerate(labels)]
    assert out["eval/eval_shapes/accuracy"] == pytest.approx(4 / 7)
    assert out["eval/eval_shapes/macro_f1"] == pytest.approx(
        f1_score(labels, preds, labels=list(eval_tasks.SHAPES), average="macro")
    )
    assert out["eval/eval_shapes/macro_auc"] == 1.0  # the target always scores highest
    assert out["eval/eval_shapes/ranked_accuracy"] == 1.0
    assert out["eval/eval_qa/accuracy"] == pytest.approx(4 / 7)
    assert out["eval/eval_qa/ranked_accuracy"] == 1.0
    # Ablations: own keys. A blank image makes the fake answer "blank" and scores uniform.
    assert out["eval/eval_colors/blank_image/exact_match"] == 0.0
    assert out["eval/eval_shapes/blank_image/macro_auc"] == 0.5
    assert "eval/eval_qa/blank_image/accuracy" not in out  # a text-only task has no image
    assert out["eval/eval_colors/shots0/exact_match"] == pytest.approx(4 / 7)
    assert "eval/eval_qa/shots0/accuracy" not in out  # already 0-shot
    assert out["eval/eval_shapes/template2/accuracy"] == pytest.approx(4 / 7)
    assert out["eval/eval_shapes/templates_std/accuracy"] == 0.0
    # Each example seen once per run: 3 tasks x (base + shots0 / blank / templates).
    # colors: base, shots0, blank, template1; shapes: base, shots0, blank, templates 1-2; qa: base
    runs = {"eval_colors": 4, "eval_shapes": 5, "eval_qa": 1}
    assert len(predictor.seen) == 7 * sum(runs.values())
    # Logged: every metric in metrics.jsonl at the step, and a predictions table per task.
    (line,) = read_metrics(tmp_path / "run")
    assert line["step"] == 5 and line["eval/eval_shapes/macro_auc"] == 1.0
    table = (tmp_path / "run" / "tables" / "predictions" / "eval_qa" / "step-5.jsonl").read_text()
    rows = [json.loads(r) for r in table.splitlines()]
    assert [r["id"] for r in rows] == [f"test-q{i}" for i in range(7)]
    assert set(rows[0]) == {"id", "prompt", "prompt_format", "target", "prediction", "score"}
    assert rows[0]["prompt_format"] == "raw" and rows[0]["prompt"].startswith("Instructions: ")
    # each task's evaluation time and examples/s beside the metrics (not among eval/ keys)
    assert line["eval_time/eval_qa/seconds"] > 0 and "eval_time/eval_qa/seconds" not in out
    speed = line["eval_time/eval_qa/examples_per_s"]
    assert speed == pytest.approx(7 / line["eval_time/eval_qa/seconds"])
    assert [r["score"] for r in rows] == [1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0]


def test_unknown_ablation_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown ablation 'shots9'"):
        evaluate_tasks([], {}, {}, FakePredictor(), ablations=["shots9"])


class LengthPredictor:
    """Answers each example with its id; records the batches generation ran and their budget."""

    def __init__(self, naive: bool = False) -> None:
        self.naive = naive
        self.batches: list[list[str]] = []
        self.budgets: list[int | None] = []

    def length_key(self, example: Example) -> int:
        return len(example.prompt)

    def generate(self, examples: list[Example], max_new_tokens: int | None = None) -> list[str]:
        self.batches.append([e.id for e in examples])
        self.budgets.append(max_new_tokens)
        return [e.id for e in examples]


def test_generation_batches_run_sorted_by_length_and_come_back_in_input_order() -> None:
    from generalist.eval.generation import predict_sorted

    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 200, size=37).tolist()
    examples = [Example("t", f"e{i}", "x" * n, "y") for i, n in enumerate(lengths)]
    sorted_run = LengthPredictor()
    out = predict_sorted(sorted_run, examples, 8, max_new_tokens=5)
    assert out == [e.id for e in examples]  # input order
    ran = [lengths[int(i[1:])] for batch in sorted_run.batches for i in batch]
    assert ran == sorted(lengths) and set(sorted_run.budgets) == {5}
    assert [len(b) for b in sorted_run.batches] == [8, 8, 8, 8, 5]
    naive = LengthPredictor(naive=True)  # the naive path: input order, the same answers
    assert predict_sorted(naive, examples, 8) == out
    assert [i for b in naive.batches for i in b] == [e.id for e in examples]


def test_generation_budget_is_the_tasks_else_its_kinds() -> None:
    import dataclasses

    from generalist.catalog.kinds import KINDS
    from generalist.errors import GeneralistError

    task = TASKS.get("eval_colors")
    assert task.generation_budget == KINDS[task.kind].max_new_tokens
    assert dataclasses.replace(task, max_new_tokens=3).generation_budget == 3
    with pytest.raises(GeneralistError, match="max_new_tokens must be >= 1"):
        dataclasses.replace(task, max_new_tokens=0)
    assert KINDS["report_generation"].max_new_tokens > KINDS["vqa"].max_new_tokens
