"""The two transformers-4 tokenizer methods the clinical scorer packages still call.

f1chexbert 0.0.2 and radgraph 0.1.18 (the maintained CheXbert and RadGraph scorers) call
`encode_plus` and `build_inputs_with_special_tokens`, which transformers 5 removed. Rather than
pin transformers < 5 for the whole project, their tokenizers are handed this wrapper: every
other attribute is the transformers-5 tokenizer's own. Own code (a dozen lines): no library
offers the shim.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import BatchEncoding, PreTrainedTokenizerBase


class Transformers4Tokenizer:
    """A BERT-family tokenizer with `encode_plus` and `build_inputs_with_special_tokens` back."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        if getattr(tokenizer, "cls_token_id", None) is None or tokenizer.sep_token_id is None:
            raise ValueError("the clinical scorers' encoders are BERT-family: [CLS] and [SEP]")
        self._tokenizer = tokenizer

    def __getattr__(self, name: str) -> Any:  # noqa: ANN401 (a proxy: the tokenizer's attribute)
        return getattr(self._tokenizer, name)

    def __len__(self) -> int:
        return len(self._tokenizer)

    def build_inputs_with_special_tokens(
        self, ids: Sequence[int], pair: Sequence[int] | None = None
    ) -> list[int]:
        """[CLS] ids [SEP] (pair [SEP]), as BERT's transformers-4 method built them."""
        out = [self._tokenizer.cls_token_id, *ids, self._tokenizer.sep_token_id]
        return [*out, *pair, self._tokenizer.sep_token_id] if pair else out

    def encode_plus(
        self, text: str | Sequence[str], pair: str | None = None, **kwargs: object
    ) -> BatchEncoding | dict[str, list[int]]:
        """transformers 4's encode_plus: a string (and pair) as `tokenizer(...)` encodes it; a
        list of wordpieces (what f1chexbert passes) converted to ids with [CLS] and [SEP]."""
        if isinstance(text, str):
            return self._tokenizer(text, pair, **kwargs)
        ids = self._tokenizer.convert_tokens_to_ids(list(text))
        return {"input_ids": self.build_inputs_with_special_tokens(ids)}
