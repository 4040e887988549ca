"""Option scoring from one encoding of each prompt (generalist.eval.generation.HFPredictor).

The naive way runs the whole prompt, images included, once per option: 8 full forwards for an
8-class example. Here the prompt is encoded once and every option scored from it:

- decoder-only models: the first option's row is exactly the naive row (prompt, images, option,
  eos, dummy image); its forward scores that option and fills the key/value cache, which is cut
  back to the prompt and repeated for the other options, whose tokens then run against it with
  the positions, token types and cross-attention mask (Mllama) they have in the naive batch.
  No attention mask goes with them: the cached prompt has no padding and the options' right
  padding comes after their tokens (and with a mask M-RoPE models would number positions from
  its full width). Gemma 3's sliding-window layers keep their past states so they can be cut.
- encoder-decoders (BLIP-2 + T5): the vision tower, Q-Former and encoder run once; the decoder
  once per option, against the encoder output.
Scores equal the naive path's to 1e-5 (relative 1e-6 for summed scores past 128, float32's
spacing there) for every family (tests/model/test_option_scoring.py).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Protocol

from generalist.batching.losses import example_losses
from generalist.batching.padding import IGNORE_INDEX
from generalist.catalog.records import Example

if TYPE_CHECKING:
    import torch

    from generalist.batching.collate import Collator
    from generalist.batching.padding import Encoded


class Scorer(Protocol):
    """What option scoring reads of generalist.eval.generation.HFPredictor."""

    model: torch.nn.Module
    score_collator: Collator
    seq2seq: bool

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Any]: ...

    def score_options_naive(self, examples: list[Example]) -> list[list[float]]: ...


def cached_option_scores(predictor: Scorer, example: Example) -> list[float]:
    """One example's option scores from one encoding of its prompt and images (see the
    module docstring). A chat prompt that a long option makes the collator shorten differs
    per option: such an example is scored the naive way."""
    import torch

    flat = [dataclasses.replace(example, target=o) for o in example.options]
    rows = _option_rows(predictor.score_collator, flat, predictor.seq2seq)
    p = rows[0].prompt_length
    if any(r.prompt_length != p or r.input_ids[:p] != rows[0].input_ids[:p] for r in rows):
        return predictor.score_options_naive([example])[0]
    first = predictor._inputs(predictor.score_collator.pad(rows[:1]))
    rest = predictor._inputs(predictor.score_collator.pad(rows[1:]))
    with torch.no_grad():
        if predictor.seq2seq:
            return _seq2seq(predictor.model, first, rest)
        labels0 = first.pop("labels")
        out = predictor.model(**first, use_cache=True, past_key_values=_new_cache(predictor.model))
        head, _ = example_losses(out.logits, labels0)
        cache = out.past_key_values
        _crop(cache, p, _cross_layers(predictor.model))
        labels = rest.pop("labels")
        # the option tokens only: the dummy image block after them is never attended
        end = int((labels != IGNORE_INDEX).nonzero()[:, 1].max()) + 1
        cont = {k: v[:, p:end] for k, v in rest.items() if k in _PER_TOKEN and v.dim() >= 2}
        # No attention mask: the cached prompt has no padding, the options' right padding
        # comes after their tokens, and with it M-RoPE models would number the positions
        # from the mask's full width.
        cache.batch_repeat_interleave(len(rows) - 1)
        n = end - p
        logits = predictor.model(
            **cont,
            past_key_values=cache,
            use_cache=True,
            cache_position=torch.arange(p, end, device=labels.device),
        ).logits
        # the first option token is predicted at the prompt's last position (the prefill)
        last = out.logits[:, p - 1 : p].expand(len(rows) - 1, 1, -1)
        lead = torch.full_like(labels[:, :1], IGNORE_INDEX)
        tail, _ = example_losses(
            torch.cat([last, logits[:, :n]], 1), torch.cat([lead, labels[:, p:end]], 1)
        )
    return [-float(head[0]), *(-tail).tolist()]


def _option_rows(collator: Collator, flat: list[Example], seq2seq: bool) -> list[Encoded]:
    """Every option's encoded row. The prompt and images are processed once (the first
    option's row) and the others take its prompt with their own target tokens, which is what
    the collator would make of them unless the prompt was cut to fit: then every row is
    encoded in full (and rows whose prompts differ are scored the naive way)."""
    first = collator.encode(flat[0])
    chat = collator.chat
    if chat is not None:
        targets = [chat.target_ids(e, e.target) for e in flat]
    else:
        targets = collator._target_ids([e.target for e in flat])
    p = first.prompt_length
    limit = collator.max_length
    if p + len(targets[0]) >= limit or p + max(len(t) for t in targets) > limit:
        return collator.encode_many(flat)
    if seq2seq:
        return [first] + [dataclasses.replace(first, labels=t) for t in targets[1:]]
    prompt = first.input_ids[:p]
    return [first] + [
        dataclasses.replace(first, input_ids=prompt + t, labels=[IGNORE_INDEX] * p + t)
        for t in targets[1:]
    ]


def _new_cache(model: torch.nn.Module) -> object:
    """None (the model makes its own cache), or for a model with sliding-window layers
    (Gemma 3) a cache that keeps the states beyond the window, so it can be cut back."""
    config = getattr(_base(model), "config", None)
    text = config.get_text_config(decoder=True) if config is not None else None
    if "sliding_attention" not in (getattr(text, "layer_types", None) or ()):
        return None
    from transformers import DynamicCache

    cache = DynamicCache(config=config)
    cache.activate_past_recording()
    return cache


def _seq2seq(model: torch.nn.Module, first: dict[str, Any], rest: dict[str, Any]) -> list[float]:
    import torch

    out = model(**first, return_dict=True)
    head, _ = example_losses(out.logits, first["labels"], shift=False)
    encoded = out.language_model_outputs.encoder_last_hidden_state
    k = rest["labels"].shape[0]
    lm = _base(model).language_model
    mask = first["attention_mask"]
    # the encoder's mask: BLIP-2 prepends its query tokens to the prompt, all attended
    queries = encoded.shape[1] - mask.shape[1]
    full = torch.cat([mask.new_ones(mask.shape[0], queries), mask], 1)
    logits = lm(
        encoder_outputs=(encoded.expand(k, -1, -1),),
        attention_mask=full.expand(k, -1),
        labels=rest["labels"],
        return_dict=True,
    ).logits
    tail, _ = example_losses(logits, rest["labels"], shift=False)
    return [-float(head[0]), *(-tail).tolist()]


# Per-token tensors of a batch (sliced to the option tokens for the cached continuation).
_PER_TOKEN = ("input_ids", "token_type_ids", "mm_token_type_ids", "cross_attention_mask")


def _base(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a peft wrapper (the one with the family's submodules)."""
    get = getattr(model, "get_base_model", None)
    return get() if callable(get) else model


def _cross_layers(model: torch.nn.Module) -> set[int]:
    """Cache layers that hold image keys (Mllama's cross-attention), which stay uncut."""
    config = getattr(_base(model), "config", None)
    text = getattr(config, "text_config", None)
    return set(getattr(text, "cross_attention_layers", None) or ())


def _crop(cache: object, length: int, cross: set[int]) -> None:
    """Cut every self-attention layer of a transformers cache back to its first `length`
    positions (the prompt)."""
    for i, layer in enumerate(cache.layers):  # type: ignore[attr-defined]
        if i in cross or not getattr(layer, "is_initialized", False):
            continue
        extra = layer.get_seq_length() - length
        if extra:
            layer.crop(-extra)
