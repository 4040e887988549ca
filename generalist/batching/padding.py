"""Encoded examples and their padding into rows: the token layout of one batch row.

Training (right padding):   [tokens][dummy image][pad]   real tokens keep their positions
Generation (left padding):  [dummy image][pad][prompt]   the prompt ends where generation starts
The dummy image's tokens and the padding have attention_mask 0 and labels -100.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

IGNORE_INDEX = -100


@dataclass
class Encoded:
    """One tokenised example before padding."""

    input_ids: list[int]
    labels: list[int]
    images: dict[str, Any]  # processor image tensors (pixel_values, ...) in image order
    task: str
    id: str
    prompt_length: int
    dummy: list[int] = field(default_factory=list)  # dummy image tokens (never attended)
    has_dummy: bool = False  # images holds a dummy image (Mllama's has no tokens)

    @property
    def length(self) -> int:
        return len(self.input_ids) + len(self.dummy)


def pad_rows(
    rows: Sequence[Encoded], width: int, pad_id: int, for_generation: bool, seq2seq: bool
) -> dict[str, list[list[int]]]:
    """Lists of input_ids, attention_mask, labels (training only) and token_types per row.

    token_types: 1 on the target (+ eos), 0 on the prompt, dummy and padding (the prefix-LM
    token_type_ids of PaliGemma). Encoder-decoder labels are the target, padded on its own.
    """
    out: dict[str, list[list[int]]] = {"ids": [], "mask": [], "labels": [], "types": []}
    label_width = max(len(r.labels) for r in rows)
    for r in rows:
        pad = width - r.length
        body = r.input_ids
        suffix = 0 if for_generation else len(body) - r.prompt_length
        kinds = [0] * (len(body) - suffix) + [1] * suffix
        hidden = [0] * (len(r.dummy) + pad)
        if for_generation:
            out["ids"].append(r.dummy + [pad_id] * pad + body)
            out["mask"].append(hidden + [1] * len(body))
            out["types"].append(hidden + kinds)
            continue
        out["ids"].append(body + r.dummy + [pad_id] * pad)
        out["mask"].append([1] * len(body) + hidden)
        out["types"].append(kinds + hidden)
        if seq2seq:
            out["labels"].append(r.labels + [IGNORE_INDEX] * (label_width - len(r.labels)))
        else:
            out["labels"].append(r.labels + [IGNORE_INDEX] * len(hidden))
    return out
