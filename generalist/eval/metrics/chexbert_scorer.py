"""CheXbert label F1 of generated reports (Med-PaLM M Table 2/3 "Micro-F1-14", "Macro-F1-14",
"Micro-F1-5", "Macro-F1-5"), through the f1chexbert package's labeler, from local weights.

CheXbert (Smit et al. 2020) reads a report and gives each of 14 observations one class: 0 blank
(not mentioned), 1 positive, 2 negative, 3 uncertain. Both the reference and the generated
report are labelled; the F1 compares the two label sets, per (report, observation):
- `chexbert_micro_f1_14` / `chexbert_macro_f1_14`: over the 14 observations; `_5`: over the
  five of MIMIC-CXR classification (atelectasis, cardiomegaly, consolidation, edema, pleural
  effusion). Micro: one F1 over every (report, observation) pair; macro: the mean of the
  observations' F1s (scikit-learn, zero_division=0, as f1chexbert's classification_report).
  Corpus-level: counts over all reports, not a mean of per-report scores.
- positive = class 1 only (uncertain counts as negative); the `_plus` variants count uncertain
  (3) as positive too, which is f1chexbert's own "rrg" mapping.

The weights come from a local folder (`eval.scorers.chexbert`), never from the hub: it holds
`chexbert.pth` (StanfordAIMI/RRG_scorers, a `{"model_state_dict": ...}` of f1chexbert's
`bert_labeler`, keys with or without DataParallel's `module.` prefix) and bert-base-uncased's
`config.json` and `vocab.txt` (its tokenizer files).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from generalist.errors import ConfigError
from generalist.eval.metrics.tokenizer_compat import Transformers4Tokenizer

if TYPE_CHECKING:
    import torch
    from transformers import BertConfig

# f1chexbert's order (F1CheXbert.target_names): the 13 four-class heads, then No Finding.
OBSERVATIONS_14 = (
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
    "No Finding",
)
OBSERVATIONS_5 = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
CHEXBERT_METRICS = tuple(
    f"chexbert_{avg}_f1_{n}{plus}"
    for plus in ("", "_plus")
    for n in ("14", "5")
    for avg in ("micro", "macro")
)
POSITIVE, UNCERTAIN = 1, 3
KEY = "eval.scorers.chexbert"


def chexbert_f1(
    references: Sequence[Sequence[int]] | np.ndarray,
    hypotheses: Sequence[Sequence[int]] | np.ndarray,
) -> dict[str, float]:
    """The eight CheXbert F1s (see the module docstring) from per-report class vectors of 14
    (CheXbert's classes 0-3, in OBSERVATIONS_14 order)."""
    from sklearn.metrics import f1_score

    ref, hyp = np.asarray(references), np.asarray(hypotheses)
    if ref.shape != hyp.shape or ref.ndim != 2 or ref.shape[1] != len(OBSERVATIONS_14):
        raise ValueError(f"need two (reports, 14) label arrays, got {ref.shape} and {hyp.shape}")
    five = [OBSERVATIONS_14.index(name) for name in OBSERVATIONS_5]
    out = {}
    for plus, positive in (("", [POSITIVE]), ("_plus", [POSITIVE, UNCERTAIN])):
        y_ref, y_hyp = np.isin(ref, positive), np.isin(hyp, positive)
        for n, columns in (("14", slice(None)), ("5", five)):
            for avg in ("micro", "macro"):
                value = f1_score(y_ref[:, columns], y_hyp[:, columns], average=avg, zero_division=0)
                out[f"chexbert_{avg}_f1_{n}{plus}"] = float(value)
    return out


def _labeler(config: BertConfig) -> torch.nn.Module:
    """f1chexbert's `bert_labeler` with its BERT built from a local config: the package's own
    __init__ fetches bert-base-uncased's config from the hub. Same modules, same state-dict keys,
    the package's forward."""
    import torch
    from f1chexbert.f1chexbert import bert_labeler
    from transformers import BertModel

    class LocalLabeler(bert_labeler):
        def __init__(self) -> None:
            torch.nn.Module.__init__(self)
            self.bert = BertModel(config, add_pooling_layer=True)
            self.dropout = torch.nn.Dropout(0.1)
            heads = [torch.nn.Linear(config.hidden_size, 4) for _ in range(13)]
            self.linear_heads = torch.nn.ModuleList(
                [*heads, torch.nn.Linear(config.hidden_size, 2)]
            )

    return LocalLabeler()


def check_chexbert_dir(folder: Path) -> Path:
    """`folder` when it holds what the labeler needs, else a ConfigError naming the key."""
    folder = Path(folder)
    needed = ("chexbert.pth", "config.json", "vocab.txt")
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise ConfigError(
            f"{KEY}={folder}: no {', '.join(missing)} there; the folder holds chexbert.pth "
            f"(StanfordAIMI/RRG_scorers) and bert-base-uncased's config.json and vocab.txt"
        )
    return folder


class CheXbertLabeler:
    """Labels reports with CheXbert weights from `folder` (batched; f1chexbert's tokenisation
    and forward)."""

    def __init__(self, folder: Path, device: str = "cpu", batch_size: int = 16) -> None:
        import torch
        from transformers import BertConfig, BertTokenizer

        folder = check_chexbert_dir(folder)
        self.device = torch.device(device)
        self.batch_size = batch_size
        tokenizer = BertTokenizer.from_pretrained(str(folder), local_files_only=True)
        self.tokenizer = Transformers4Tokenizer(tokenizer)
        self.model = _labeler(BertConfig.from_pretrained(str(folder), local_files_only=True))
        checkpoint = torch.load(folder / "chexbert.pth", map_location="cpu", weights_only=True)
        state = checkpoint.get("model_state_dict", checkpoint)
        state = {k.removeprefix("module."): v for k, v in state.items()}
        missing_keys, _ = self.model.load_state_dict(state, strict=False)  # old position_ids
        if missing_keys:
            raise ConfigError(
                f"{KEY}={folder}: chexbert.pth is not a CheXbert labeler for this config.json "
                f"(missing {missing_keys[:3]}...); use the StanfordAIMI/RRG_scorers file"
            )
        self.model.to(self.device).eval()

    def labels(self, reports: Sequence[str]) -> np.ndarray:
        """(reports, 14) CheXbert classes (0 blank, 1 positive, 2 negative, 3 uncertain)."""
        import pandas as pd
        import torch
        from f1chexbert.f1chexbert import generate_attention_masks, tokenize
        from tqdm import tqdm

        encoded = tokenize(pd.Series(list(reports), dtype=object), self.tokenizer)
        out = np.zeros((len(encoded), len(OBSERVATIONS_14)), dtype=np.int64)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))  # little padding
        pad = self.tokenizer.pad_token_id or 0
        starts = range(0, len(order), self.batch_size)
        progress = tqdm(starts, desc="CheXbert labels", unit="batch", disable=len(order) < 512)
        with torch.no_grad():
            for start in progress:
                rows = order[start : start + self.batch_size]
                lengths = [len(encoded[i]) for i in rows]
                batch = torch.full((len(rows), max(lengths)), pad, dtype=torch.long)
                for j, i in enumerate(rows):
                    batch[j, : lengths[j]] = torch.tensor(encoded[i])
                mask = generate_attention_masks(batch, lengths, self.device)
                heads = self.model(batch.to(self.device), mask)
                classes = torch.stack([h.argmax(dim=1) for h in heads], dim=1).cpu().numpy()
                out[rows] = classes
        return out

    def f1(self, references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, float]:
        """The CheXbert F1s of `hypotheses` against `references`."""
        labels = self.labels([*references, *hypotheses])
        return chexbert_f1(labels[: len(references)], labels[len(references) :])
