"""Choice metrics: classification (accuracy, macro-F1, macro-AUC), per-condition binary
classification (MIMIC-CXR's 5 conditions), multiple-choice QA (accuracy).

- `accuracy` (classification, medical_qa): the generated answer equals the target, averaged
  over examples; an answer outside the label set is simply wrong.
- `macro_f1` (classification): scikit-learn's macro F1 of the generated answers over the labels
  present in the evaluated references (`f1_labels="present"`, the default): a class no
  reference has is left out of the average instead of counting as 0, so a partial evaluation
  set (`--max-examples`) is not marked down for the classes it happens to miss. A prediction of
  such a class still counts against the reference it was given for (a false negative there).
  `f1_labels="all"` averages over every declared label (absent ones score 0).
- `macro_auc` (classification): scikit-learn's one-vs-rest macro ROC-AUC of the softmax over
  each option's log-likelihood (free generation cannot give an AUC); with two labels, the
  binary AUC of the second label; classes absent from the references are left out.
- `ranked_accuracy`: accuracy of the highest-likelihood option.
- Per condition (a task whose Task.extra["macro_over"] names a record field, e.g. MIMIC-CXR's
  yes/no question per (image, condition)): `<condition>/auc` (ROC-AUC of P(positive) over that
  condition's examples), `<condition>/f1` (F1 of the positive answer), `<condition>/accuracy`;
  `macro_auc` and `macro_f1` are their means over the conditions (Med-PaLM M Table 2/3's
  "macro-AUC" and "macro-F1" for MIMIC-CXR: the five conditions' binary figures averaged). A
  condition whose references have one class only has no AUC, one with no positive reference
  no F1; each is left out of its mean. The pooled yes/no figures stay as `pooled_auc` and
  `pooled_macro_f1`; `accuracy` and `ranked_accuracy` are pooled over every question.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from generalist.catalog.task import Task
from generalist.errors import GeneralistError
from generalist.eval.metrics.text import check_pairs, slug


def softmax_rows(scores: Sequence[Sequence[float]]) -> np.ndarray:
    """Row-wise softmax of option log-likelihoods (probabilities over the option set)."""
    arr = np.asarray(scores, dtype=np.float64)
    arr = arr - arr.max(axis=1, keepdims=True)
    exp = np.exp(arr)
    return exp / exp.sum(axis=1, keepdims=True)


def macro_auc(
    targets: Sequence[str], labels: Sequence[str], scores: Sequence[Sequence[float]]
) -> float:
    """One-vs-rest macro ROC-AUC from per-option scores (rows aligned with `labels`).

    NaN when undefined (a single class among the targets). Classes absent from the targets
    are left out of the average (sklearn refuses them).
    """
    from sklearn.metrics import roc_auc_score

    labels = list(labels)
    probs = softmax_rows(scores)
    y = np.array([labels.index(t) if t in labels else -1 for t in targets])
    present = sorted(set(y.tolist()) - {-1})
    if len(present) < 2:
        return float("nan")
    if len(labels) == 2:
        return float(roc_auc_score(y == 1, probs[:, 1]))
    if len(present) == len(labels):
        return float(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    # sklearn's ovr needs every class present; average the per-class AUCs it would compute.
    return float(np.mean([roc_auc_score(y == c, probs[:, c]) for c in present]))


def classification_metrics(
    targets: Sequence[str],
    predictions: Sequence[str],
    labels: Sequence[str],
    option_scores: Sequence[Sequence[float]] | None = None,
    f1_labels: Literal["present", "all"] = "present",
) -> dict[str, float]:
    """accuracy, macro_f1 (over the labels the references have, or all of `labels`), and
    macro_auc + ranked_accuracy from option scores."""
    from sklearn.metrics import accuracy_score, f1_score

    check_pairs(targets, predictions)
    labels = list(labels)
    averaged = [x for x in labels if x in set(targets)] if f1_labels == "present" else labels
    out = {
        "accuracy": float(accuracy_score(targets, predictions)),
        "macro_f1": float(
            f1_score(targets, predictions, labels=averaged, average="macro", zero_division=0)
        ),
    }
    if option_scores is not None:
        out["macro_auc"] = macro_auc(targets, labels, option_scores)
        out.update(ranked_accuracy(targets, [labels] * len(targets), option_scores))
    return out


def condition_spec(task: Task) -> Mapping[str, object] | None:
    """The task's per-condition declaration (Task.extra["macro_over"]), checked, or None:
    {"field": record field naming the condition, "values": the conditions in report order,
    "positive": the label meaning "present"}."""
    spec = task.extra.get("macro_over")
    if spec is None:
        return None
    if not isinstance(spec, Mapping) or set(spec) != {"field", "values", "positive"}:
        raise GeneralistError(
            f"task {task.name!r}: extra['macro_over'] must be a mapping with exactly the keys "
            f"field, values, positive; got {spec!r}"
        )
    if task.kind != "classification" or spec["positive"] not in task.labels:
        raise GeneralistError(
            f"task {task.name!r}: macro_over needs a classification task whose labels include "
            f"its positive label {spec['positive']!r} (labels: {list(task.labels)})"
        )
    return spec


def per_condition_metrics(
    targets: Sequence[str],
    predictions: Sequence[str],
    conditions: Sequence[str],
    order: Sequence[str],
    positive: str,
    labels: Sequence[str],
    option_scores: Sequence[Sequence[float]] | None = None,
) -> dict[str, float]:
    """`<condition>/{auc,f1,accuracy}` for each condition of `order` with examples, and their
    means `macro_auc`, `macro_f1` (see the module docstring). `conditions[i]` is example i's."""
    from sklearn.metrics import f1_score, roc_auc_score

    check_pairs(targets, predictions)
    if len(conditions) != len(targets):
        raise ValueError(f"{len(targets)} targets but {len(conditions)} conditions")
    probs = None
    if option_scores is not None:
        probs = softmax_rows(option_scores)[:, list(labels).index(positive)]
    cond = np.asarray(conditions, dtype=object)
    gold = np.asarray(targets, dtype=object) == positive
    said = np.asarray(predictions, dtype=object) == positive
    out: dict[str, float] = {}
    aucs, f1s = [], []
    for name in order:
        picked = cond == name
        if not picked.any():
            continue
        key = slug(name)
        out[f"{key}/accuracy"] = float(np.mean(gold[picked] == said[picked]))
        f1 = float("nan")
        if gold[picked].any():
            f1 = float(f1_score(gold[picked], said[picked], zero_division=0))
            f1s.append(f1)
        out[f"{key}/f1"] = f1
        if probs is not None:
            auc = float("nan")
            if 0 < gold[picked].sum() < picked.sum():
                auc = float(roc_auc_score(gold[picked], probs[picked]))
                aucs.append(auc)
            out[f"{key}/auc"] = auc
    out["macro_f1"] = float(np.mean(f1s)) if f1s else float("nan")
    if probs is not None:
        out["macro_auc"] = float(np.mean(aucs)) if aucs else float("nan")
    return out


def ranked_accuracy(
    targets: Sequence[str],
    options: Sequence[Sequence[str]],
    option_scores: Sequence[Sequence[float]],
) -> dict[str, float]:
    """Accuracy of the highest-scoring option of each example (options may differ per example)."""
    picks = [opts[int(np.argmax(s))] for opts, s in zip(options, option_scores)]
    return {"ranked_accuracy": float(np.mean([p == t for p, t in zip(picks, targets)]))}


def medical_qa_metrics(
    targets: Sequence[str],
    predictions: Sequence[str],
    options: Sequence[Sequence[str]] | None = None,
    option_scores: Sequence[Sequence[float]] | None = None,
) -> dict[str, float]:
    """accuracy of the generated answer (+ ranked_accuracy when option scores are given)."""
    check_pairs(targets, predictions)
    out = {"accuracy": float(np.mean([t == p for t, p in zip(targets, predictions)]))}
    if options is not None and option_scores is not None:
        out.update(ranked_accuracy(targets, options, option_scores))
    return out
