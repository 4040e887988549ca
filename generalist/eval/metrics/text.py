"""Text metrics: VQA answers (BLEU-1, token F1, exact match) and summaries (ROUGE-L, sacreBLEU).

- `bleu1` (vqa): sentence-level BLEU-1 (nltk `sentence_bleu`, unigram weights, brevity penalty)
  of whitespace tokens, averaged over examples: the per-question BLEU-1 of the medical VQA
  papers Med-PaLM M compares with (its Table 2/3 VQA rows). An empty prediction scores 0.
- `token_f1` (vqa): SQuAD v1.1 token F1 (answers lower-cased, punctuation and articles
  removed, bag-of-tokens overlap), averaged over examples (the paper's VQA "F1").
- `exact_match` (vqa): string equality, averaged; `exact_match_<type>` splits it by the record's
  `answer_type` when answer types are given (`closed` / `open` for the medical VQA sets).
- `rouge_l` (summarization, report generation): rouge-score ROUGE-L F-measure per example,
  averaged, with a Unicode word tokenizer (rouge-score's default drops non-ASCII letters).
- `bleu` (summarization): sacreBLEU corpus BLEU-4 (13a tokenisation) / 100.
"""

from __future__ import annotations

import collections
import re
import string
from collections.abc import Sequence

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def check_pairs(targets: Sequence[str], predictions: Sequence[str]) -> None:
    """ValueError unless there are as many predictions as targets, and at least one."""
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
    check_pairs(targets, predictions)
    exact = [float(t == p) for t, p in zip(targets, predictions)]
    out = {
        "bleu1": float(np.mean([sentence_bleu1(t, p) for t, p in zip(targets, predictions)])),
        "token_f1": float(np.mean([token_f1(t, p) for t, p in zip(targets, predictions)])),
        "exact_match": float(np.mean(exact)),
    }
    if answer_types is not None:
        for kind in sorted(set(answer_types)):
            picked = [e for e, a in zip(exact, answer_types) if a == kind]
            out[f"exact_match_{slug(kind)}"] = float(np.mean(picked))
    return out


def slug(name: str) -> str:
    """A metric-key piece: lower case, runs of other characters as '_' ("Pleural Effusion" ->
    "pleural_effusion", "yes/no" -> "yes_no")."""
    return re.sub(r"[^a-z0-9]+", "_", str(name).lower()).strip("_")


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

    check_pairs(targets, predictions)
    bleu = sacrebleu.corpus_bleu(list(predictions), [list(targets)]).score / 100.0
    return {"rouge_l": rouge_l(targets, predictions), "bleu": float(bleu)}
