"""Per-kind metrics, `fn(targets, predictions, ...) -> dict[str, float]`, split by kind:

    text.py        VQA (BLEU-1, token F1, exact match) and summaries (ROUGE-L, sacreBLEU)
    choice.py      classification, per-condition classification, multiple-choice QA
    captions.py    report generation n-gram metrics (pycocoevalcap, from a writable copy)
    scorers.py     clinical report metrics (CheXbert, RadGraph) and eval.scorers
    compute.py     compute_metrics: the one entry point, by task kind

Each module's docstring says how each metric is computed and which paper table it matches.
This package face hands on the public functions; the package's own code imports each name
from the module that defines it.
"""

from generalist.eval.metrics.captions import caption_metrics, normalize_whitespace, require_java
from generalist.eval.metrics.chexbert_scorer import chexbert_f1
from generalist.eval.metrics.choice import (
    classification_metrics,
    macro_auc,
    medical_qa_metrics,
    per_condition_metrics,
    ranked_accuracy,
    softmax_rows,
)
from generalist.eval.metrics.compute import compute_metrics, finite, report_generation_metrics
from generalist.eval.metrics.scorers import ScorerConfig, check_scorers, clinical_metrics
from generalist.eval.metrics.text import (
    rouge_l,
    sentence_bleu1,
    squad_normalize,
    summarization_metrics,
    token_f1,
    vqa_metrics,
)

__all__ = [
    "ScorerConfig",
    "caption_metrics",
    "check_scorers",
    "chexbert_f1",
    "classification_metrics",
    "clinical_metrics",
    "compute_metrics",
    "finite",
    "macro_auc",
    "medical_qa_metrics",
    "normalize_whitespace",
    "per_condition_metrics",
    "ranked_accuracy",
    "report_generation_metrics",
    "require_java",
    "rouge_l",
    "sentence_bleu1",
    "softmax_rows",
    "squad_normalize",
    "summarization_metrics",
    "token_f1",
    "vqa_metrics",
]
