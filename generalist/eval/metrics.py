"""Per-kind metrics: `fn(targets, predictions, ...) -> dict[str, float]`, in [0, 1] but CIDEr-D.

Inputs are already post-processed strings (`Task.postprocess`, by default
`generalist.catalog.task.normalize_text`); normalisation is not this module's job. Keys match
`generalist.catalog.task.KIND_METRICS`; extra keys are documented per function. Each variant:

- `bleu1` (vqa): sentence-level BLEU-1 (nltk `sentence_bleu`, unigram weights, brevity penalty)
  averaged over examples: the per-question BLEU-1 used by the medical VQA papers Med-PaLM M
  compares with. An empty prediction scores 0.
- `token_f1` (vqa): SQuAD v1.1 token F1 (answers lower-cased, punctuation and articles
  removed, bag-of-tokens overlap), averaged over examples.
- `exact_match` (vqa): string equality; `exact_match_<type>` splits it by the record's
  `answer_type` when answer types are given: `exact_match_closed` / `exact_match_open` for the
  medical VQA sets ("closed" = yes/no), `exact_match_yes_no` / `_shape` / `_color` for easy-vqa.
- `accuracy`, `macro_f1` (classification, medical_qa): scikit-learn on the generated answer; a
  generated answer outside the label set is simply wrong. `macro_auc` (classification) is
  scikit-learn's one-vs-rest macro ROC-AUC of the softmax over each option's log-likelihood
  (free generation cannot give AUC); with two labels, the binary AUC of the second label.
  `ranked_accuracy`: accuracy of the highest-likelihood option.
- Report generation (pycocoevalcap, the COCO caption toolkit; needs Java): texts tokenised by
  its PTBTokenizer; `bleu1`, `bleu4` corpus-level BLEU (closest reference length); `cider_d`
  is pycocoevalcap's `Cider`, which implements CIDEr-D (clipped n-gram counts, Gaussian length
  penalty sigma=6, x10) with document frequencies from the evaluated references; its raw value
  (0 to 10, the one exception to [0, 1]; identical texts score 10 when their n-grams are not in
  every reference) is what papers print as a percentage (Med-PaLM M's "CIDEr-D 26.17%" is
  0.2617); `meteor` METEOR 1.5; `rouge_l` as for summarization.
- `rouge_l` (summarization, report generation): rouge-score ROUGE-L F-measure averaged over
  examples, with a Unicode word tokenizer (rouge-score's default drops non-ASCII letters).
- `bleu` (summarization): sacreBLEU corpus BLEU-4 (13a tokenisation) / 100.
"""

from __future__ import annotations

import collections
import math
import re
import shutil
import string
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from generalist.catalog.task import Task
from generalist.errors import GeneralistError

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def _check(targets: Sequence[str], predictions: Sequence[str]) -> None:
    if len(targets) != len(predictions):
        raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
    if not targets:
        raise ValueError("no examples to score")


def squad_normalize(text: str) -> str:
    """SQuAD v1.1 answer normalisation: lower, drop punctuation and articles, fix whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def token_f1(target: str, prediction: str) -> float:
    """SQuAD token F1 of one answer (own code: the official script is not a library)."""
    gold, pred = squad_normalize(target).split(), squad_normalize(prediction).split()
    if not gold or not pred:
        return float(gold == pred)  # both empty -> 1, one empty -> 0 (as SQuAD 2.0 does)
    common = collections.Counter(gold) & collections.Counter(pred)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def sentence_bleu1(target: str, prediction: str) -> float:
    """Sentence-level BLEU-1 (nltk) of whitespace tokens; 0 for an empty prediction."""
    from nltk.translate.bleu_score import sentence_bleu

    hyp, ref = prediction.split(), target.split()
    if not hyp or not ref:
        return 0.0
    return float(sentence_bleu([ref], hyp, weights=(1.0,)))


def vqa_metrics(
    targets: Sequence[str],
    predictions: Sequence[str],
    answer_types: Sequence[str] | None = None,
) -> dict[str, float]:
    """bleu1, token_f1, exact_match (+ exact_match_<answer type> when answer_types are given)."""
    _check(targets, predictions)
    exact = [float(t == p) for t, p in zip(targets, predictions)]
    out = {
        "bleu1": float(np.mean([sentence_bleu1(t, p) for t, p in zip(targets, predictions)])),
        "token_f1": float(np.mean([token_f1(t, p) for t, p in zip(targets, predictions)])),
        "exact_match": float(np.mean(exact)),
    }
    if answer_types is not None:
        for kind in sorted(set(answer_types)):
            picked = [e for e, a in zip(exact, answer_types) if a == kind]
            name = re.sub(r"[^a-z0-9]+", "_", str(kind).lower()).strip("_")
            out[f"exact_match_{name}"] = float(np.mean(picked))
    return out


def softmax_rows(scores: Sequence[Sequence[float]]) -> np.ndarray:
    """Row-wise softmax of option log-likelihoods (probabilities over the option set)."""
    arr = np.asarray(scores, dtype=np.float64)
    arr = arr - arr.max(axis=1, keepdims=True)
    exp = np.exp(arr)
    return exp / exp.sum(axis=1, keepdims=True)


def macro_auc(targets: Sequence[str], labels: Sequence[str], scores: Any) -> float:
    """One-vs-rest macro ROC-AUC from per-option scores (rows aligned with `labels`).

    NaN when undefined (a single class among the targets). Classes absent from the targets
    are left out of the average (sklearn refuses them).
    """
    from sklearn.metrics import roc_auc_score

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
) -> dict[str, float]:
    """accuracy, macro_f1 (over `labels`), and macro_auc + ranked_accuracy from option scores."""
    from sklearn.metrics import accuracy_score, f1_score

    _check(targets, predictions)
    labels = list(labels)
    out = {
        "accuracy": float(accuracy_score(targets, predictions)),
        "macro_f1": float(
            f1_score(targets, predictions, labels=labels, average="macro", zero_division=0)
        ),
    }
    if option_scores is not None:
        out["macro_auc"] = macro_auc(targets, labels, option_scores)
        out.update(ranked_accuracy(targets, [labels] * len(targets), option_scores))
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
    _check(targets, predictions)
    out = {"accuracy": float(np.mean([t == p for t, p in zip(targets, predictions)]))}
    if options is not None and option_scores is not None:
        out.update(ranked_accuracy(targets, options, option_scores))
    return out


class UnicodeTokenizer:
    """Lower-cased Unicode word tokens for rouge-score (its default keeps only [a-z0-9])."""

    def tokenize(self, text: str) -> list[str]:
        return re.findall(r"\w+", text.lower())


def rouge_l(targets: Sequence[str], predictions: Sequence[str]) -> float:
    """Mean ROUGE-L F-measure (rouge-score) with the Unicode tokenizer."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=UnicodeTokenizer())
    values = [scorer.score(t, p)["rougeL"].fmeasure for t, p in zip(targets, predictions)]
    return float(np.mean(values))


def summarization_metrics(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
    """rouge_l (mean F-measure) and bleu (sacreBLEU corpus BLEU-4 / 100)."""
    import sacrebleu

    _check(targets, predictions)
    bleu = sacrebleu.corpus_bleu(list(predictions), [list(targets)]).score / 100.0
    return {"rouge_l": rouge_l(targets, predictions), "bleu": float(bleu)}


def require_java(what: str) -> None:
    """GeneralistError unless a `java` executable is on PATH (pycocoevalcap runs jars)."""
    if shutil.which("java") is None:
        raise GeneralistError(
            f"{what} needs Java (pycocoevalcap runs the PTB tokenizer and METEOR as jars) but "
            f"no `java` is on PATH; install a JRE (e.g. `apt-get install default-jre-headless`) "
            f"or drop the metric from the task"
        )


_meteor_lock = threading.Lock()
_meteor: Any = None


def _meteor_scorer() -> Any:
    """One METEOR jar per process: starting it loads paraphrase tables (~10-20 s)."""
    global _meteor
    with _meteor_lock:
        if _meteor is None:
            from pycocoevalcap.meteor.meteor import Meteor

            _meteor = Meteor()
        return _meteor


def report_generation_metrics(
    targets: Sequence[str],
    predictions: Sequence[str],
    metrics: Sequence[str] = ("bleu1", "bleu4", "rouge_l", "cider_d", "meteor"),
) -> dict[str, float]:
    """pycocoevalcap BLEU-1/4, CIDEr-D, METEOR on PTB-tokenised text, plus rouge-score ROUGE-L."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    _check(targets, predictions)
    require_java("report generation metrics")
    # One tokenizer run (one JVM start) for references and hypotheses together.
    texts = {f"r{i}": [{"caption": t}] for i, t in enumerate(targets)}
    texts.update({f"h{i}": [{"caption": p}] for i, p in enumerate(predictions)})
    tokens = PTBTokenizer().tokenize(texts)
    refs = {i: tokens[f"r{i}"] for i in range(len(targets))}
    hyps = {i: tokens[f"h{i}"] for i in range(len(targets))}
    out: dict[str, float] = {}
    if {"bleu1", "bleu4"} & set(metrics):
        bleu, _ = Bleu(4).compute_score(refs, hyps, verbose=0)
        out["bleu1"], out["bleu4"] = float(bleu[0]), float(bleu[3])
    if "cider_d" in metrics:
        out["cider_d"] = float(Cider().compute_score(refs, hyps)[0])
    if "meteor" in metrics:
        out["meteor"] = float(_meteor_scorer().compute_score(refs, hyps)[0])
    if "rouge_l" in metrics:
        out["rouge_l"] = rouge_l(targets, predictions)
    return {k: v for k, v in out.items() if k in metrics}


def compute_metrics(
    task: Task,
    targets: Sequence[str],
    predictions: Sequence[str],
    *,
    answer_types: Sequence[str] | None = None,
    options: Sequence[Sequence[str]] | None = None,
    option_scores: Sequence[Sequence[float]] | None = None,
    labels: Sequence[str] | None = None,
) -> dict[str, float]:
    """The metrics of `task` (a generalist.catalog.task.Task) by its kind.

    labels: the class labels as the targets are written (default task.labels; evaluation
    passes them post-processed like the targets).
    """
    kind = task.kind
    if kind == "vqa":
        return vqa_metrics(targets, predictions, answer_types)
    if kind == "classification":
        labels = task.labels if labels is None else labels
        return classification_metrics(targets, predictions, labels, option_scores)
    if kind == "medical_qa":
        return medical_qa_metrics(targets, predictions, options, option_scores)
    if kind == "report_generation":
        return report_generation_metrics(targets, predictions, task.metrics)
    if kind == "summarization":
        return summarization_metrics(targets, predictions)
    raise GeneralistError(f"task {task.name!r}: no metrics for kind {kind!r}")


def finite(metrics: Mapping[str, float]) -> dict[str, float]:
    """Drop NaN/inf values (undefined metrics, e.g. AUC with one class) before logging."""
    return {k: v for k, v in metrics.items() if math.isfinite(v)}
