"""Metric values against hand-computed worked examples and the reference libraries."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rouge_score import rouge_scorer
from sklearn.metrics import f1_score, roc_auc_score

from generalist.catalog.task import TASKS
from generalist.errors import GeneralistError
from generalist.eval import metrics


def test_vqa_bleu1_token_f1_and_exact_match_split() -> None:
    targets = ["x y d e", "the cat sat", "yes", "left lung"]
    preds = ["x y c", "a cat sat down", "yes", "right lung"]
    out = metrics.vqa_metrics(targets, preds, ["open", "open", "closed", "open"])
    # BLEU-1 of "x y c" vs "x y d e": precision 2/3, brevity penalty exp(1 - 4/3).
    bleu = [2 / 3 * math.exp(1 - 4 / 3), 2 / 4, 1.0, 1 / 2]
    # SQuAD F1 of "the cat sat" vs "a cat sat down": articles dropped, P 2/3, R 1 -> 0.8.
    f1 = [2 * (2 / 3 * 2 / 4) / (2 / 3 + 2 / 4), 0.8, 1.0, 0.5]
    assert out["bleu1"] == pytest.approx(np.mean(bleu), abs=1e-12)
    assert out["token_f1"] == pytest.approx(np.mean(f1), abs=1e-12)
    assert out["exact_match"] == 0.25
    assert out["exact_match_closed"] == 1.0
    assert out["exact_match_open"] == 0.0
    assert metrics.vqa_metrics(["yes"], [""])["bleu1"] == 0.0
    easy = metrics.vqa_metrics(
        ["yes", "red", "red"], ["yes", "red", "blue"], ["yes/no"] + ["color"] * 2
    )
    assert (easy["exact_match_yes_no"], easy["exact_match_color"]) == (1.0, 0.5)


def test_classification_accuracy_f1_and_binary_auc_by_hand() -> None:
    labels = ("no", "yes")
    targets = ["no", "yes", "yes", "no"]
    p_yes = [0.1, 0.8, 0.4, 0.5]
    scores = [[math.log(1 - p), math.log(p)] for p in p_yes]
    out = metrics.classification_metrics(targets, ["no", "yes", "maybe", "yes"], labels, scores)
    assert out["accuracy"] == 0.5
    # "no": P 1/1, R 1/2 -> 2/3; "yes": P 1/2, R 1/2 -> 1/2 ("maybe" is outside the labels).
    assert out["macro_f1"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    # Positive 0.8 beats both negatives, 0.4 beats one of two: AUC 3/4.
    assert out["macro_auc"] == pytest.approx(0.75)
    assert out["ranked_accuracy"] == 0.75


def test_multiclass_auc_equals_sklearn_ovr_and_handles_absent_class() -> None:
    rng = np.random.default_rng(0)
    labels = ("a", "b", "c")
    y = rng.integers(0, 3, size=40)
    scores = rng.normal(size=(40, 3)) + np.eye(3)[y]
    targets = [labels[i] for i in y]
    probs = np.exp(scores) / np.exp(scores).sum(axis=1, keepdims=True)
    expected = roc_auc_score(y, probs, multi_class="ovr", average="macro")
    assert metrics.macro_auc(targets, labels, scores) == pytest.approx(expected, abs=1e-12)
    # Class "c" absent: the mean of the per-class AUCs of the classes present.
    two = [t for t in targets if t != "c"]
    s2 = scores[y != 2]
    p2 = probs[y != 2]
    y2 = y[y != 2]
    by_hand = np.mean([roc_auc_score(y2 == c, p2[:, c]) for c in (0, 1)])
    assert metrics.macro_auc(two, labels, s2) == pytest.approx(by_hand)
    assert math.isnan(metrics.macro_auc(["a", "a"], labels, s2[:2]))


def test_medical_qa_accuracy_and_ranked_accuracy() -> None:
    out = metrics.medical_qa_metrics(
        ["x", "q"], ["x", "p"], options=[["x", "y"], ["p", "q"]], option_scores=[[0, -1], [0, 1]]
    )
    assert out == {"accuracy": 0.5, "ranked_accuracy": 1.0}


def test_rouge_l_keeps_non_ascii_and_matches_rouge_score_on_ascii() -> None:
    # LCS 2 of 4 target tokens, 2 of 2 predicted: F = 2 * 1 * 0.5 / 1.5.
    assert metrics.rouge_l(["Καμία διάχυση στον θώρακα"], ["Καμία διάχυση"]) == pytest.approx(2 / 3)
    default = rouge_scorer.RougeScorer(["rougeL"]).score("Καμία διάχυση", "Καμία διάχυση")
    assert default["rougeL"].fmeasure == 0.0  # why the custom tokenizer exists
    ref = rouge_scorer.RougeScorer(["rougeL"]).score("no acute findings here", "no findings")
    assert metrics.rouge_l(["no acute findings here"], ["no findings"]) == pytest.approx(
        ref["rougeL"].fmeasure
    )


def test_summarization_bleu_worked_example() -> None:
    out = metrics.summarization_metrics(["the cat sat on a mat"], ["the cat sat on the mat"])
    # n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths so no brevity penalty.
    assert out["bleu"] == pytest.approx((5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25, abs=1e-9)


def test_report_generation_bleu_and_cider_d_by_hand() -> None:
    targets = ["the heart size is normal today", "small left pleural effusion is seen"]
    out = metrics.report_generation_metrics(targets, list(targets), ("bleu1", "bleu4", "cider_d"))
    assert out["bleu1"] == pytest.approx(1.0, abs=1e-6)
    assert out["bleu4"] == pytest.approx(1.0, abs=1e-6)
    assert out["cider_d"] == pytest.approx(10.0, abs=1e-9)  # identical text: CIDEr-D maximum
    short = metrics.report_generation_metrics(["a b c d"], ["a b c"], ("bleu1",))
    assert short["bleu1"] == pytest.approx(math.exp(1 - 4 / 3), abs=1e-6)


@pytest.mark.slow
def test_report_generation_meteor() -> None:
    targets = ["the heart size is normal", "small left pleural effusion"]
    same = metrics.report_generation_metrics(targets, targets, ("meteor",))["meteor"]
    other = metrics.report_generation_metrics(targets, ["lungs are clear", "no"], ("meteor",))
    assert 0.9 < same <= 1.0
    assert other["meteor"] < same


def test_missing_java_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(GeneralistError, match="needs Java"):
        metrics.report_generation_metrics(["a"], ["a"])


def test_compute_metrics_dispatches_by_task_kind() -> None:
    task = TASKS.get("easy_vqa_shape")
    n = len(task.labels)
    scores = [[0.0 if j == i else -5.0 for j in range(n)] for i in range(n)]
    out = metrics.compute_metrics(task, list(task.labels), list(task.labels), option_scores=scores)
    assert out == {"accuracy": 1.0, "macro_f1": 1.0, "macro_auc": 1.0, "ranked_accuracy": 1.0}
    assert set(task.metrics) <= set(out)


def test_macro_f1_averages_over_the_labels_the_references_have() -> None:
    labels = ("a", "b", "c")  # "c" is in no reference of this (partial) evaluation set
    targets, preds = ["a", "a", "b"], ["a", "c", "b"]
    out = metrics.classification_metrics(targets, preds, labels)
    # "a": P 1/1, R 1/2 -> 2/3; "b": 1; "c" left out (its one prediction is a's false negative)
    assert out["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert out["macro_f1"] == pytest.approx(
        f1_score(targets, preds, labels=["a", "b"], average="macro", zero_division=0)
    )
    every = metrics.classification_metrics(targets, preds, labels, f1_labels="all")
    assert every["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)  # the old rule: c counts 0


@pytest.mark.parametrize("separator", ["\r", "\u2028", "\u0085", "\r\n"])
def test_report_text_is_whitespace_normalised_inside_the_metric(separator: str) -> None:
    # A line break inside one text used to shift pycocoevalcap's line-based tokenizer output by
    # one line: every later pair was scored against the wrong reference.
    targets = ["the heart size is normal", "small left pleural effusion", "no pneumothorax seen"]
    preds = [f"the heart{separator}size is normal", targets[1], targets[2]]
    wanted = ("bleu1", "bleu4", "cider_d", "rouge_l")
    out = metrics.report_generation_metrics(targets, preds, wanted)
    clean = metrics.report_generation_metrics(targets, list(targets), wanted)
    assert out == pytest.approx(clean)
    assert out["bleu4"] == pytest.approx(1.0, abs=1e-6)
    swapped = metrics.report_generation_metrics([f"a{separator}b", "c d"], ["a b", "c d"], wanted)
    assert swapped["bleu1"] == pytest.approx(1.0, abs=1e-6)
