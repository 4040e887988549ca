"""What evaluation asks of a model: greedy answers and option log-likelihoods.

A predictor is anything with
    generate(examples: list[Example]) -> list[str]                 # one answer per example
    score_options(examples: list[Example]) -> list[list[float]]    # one score per option
so evaluation can be tested with a fake and run with any model. `HFPredictor` implements it for
a Hugging Face model (a ModelBundle's, or a DeepSpeed engine's `.module`) through our Collator:

Both collators use the bundle's prompt format (`model.prompt_format`, saved with the model dir),
so evaluation feeds the model the format it trained on.

- generate: prompt-only batches (left padding), greedy decoding until eos (chat: or the
  template's end-of-turn token), the new tokens decoded and cut at the first newline (the
  model would go on with another "Given ..." block otherwise).
- score_options: for each option the sequence `prompt + " " + option + eos` (chat: the option
  as the assistant turn; exactly what training sees for a correct answer); the score is the
  summed log-probability of the option's tokens and eos under teacher forcing. Picking the
  best option is decoding constrained to the option set (what BiomedGPT does with a trie,
  done exactly over whole options); softmax over the scores gives the class probabilities
  that macro-AUC needs.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from generalist.batching.collate import Collator
from generalist.batching.losses import example_losses
from generalist.batching.model_inputs import to_device
from generalist.batching.padding import IGNORE_INDEX
from generalist.catalog.records import Example
from generalist.model.bundle import ModelBundle

if TYPE_CHECKING:
    import torch


class Predictor(Protocol):
    def generate(self, examples: list[Example]) -> list[str]: ...

    def score_options(self, examples: list[Example]) -> list[list[float]]: ...


def blank_image_like(data: bytes) -> bytes:
    """A black PNG of the same size as the encoded image `data` (the blank-image ablation)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        size = image.size
    out = io.BytesIO()
    Image.new("RGB", size).save(out, format="PNG")
    return out.getvalue()


def with_blank_images(example: Example) -> Example:
    """The example with every image replaced by a black one of the same size."""
    cache: dict[bytes, bytes] = {}
    images = tuple(cache.setdefault(b, blank_image_like(b)) for b in example.images)
    return dataclasses.replace(example, images=images)


def first_line(text: str) -> str:
    """The answer part of a generation: up to the first newline, stripped."""
    return text.strip().split("\n", 1)[0].strip()


class HFPredictor:
    """Predictor over a Hugging Face model and a ModelBundle's processor (see module docstring).

    model: the module to call (default bundle.model); pass `engine.module` under DeepSpeed.
    synced_gpus: keep generating until every rank is done (needed under ZeRO-3, where each
        forward is collective); None means "when more than one rank".
    prompt_format: "raw" | "chat"; None: the bundle's model.prompt_format (saved in its dir).
    """

    def __init__(
        self,
        bundle: ModelBundle,
        max_length: int,
        max_new_tokens: int = 32,
        model: Any = None,
        synced_gpus: bool | None = None,
        prompt_format: str | None = None,
        naive: bool = False,
    ) -> None:
        self.bundle = bundle
        self.model = model if model is not None else bundle.model
        self.max_new_tokens = max_new_tokens
        self.tokenizer = bundle.tokenizer
        # Encoder-decoders (BLIP-2 + T5): the decoder output holds only the answer, and the
        # logits align with the labels without the decoder-only one-token shift.
        self.seq2seq = bool(getattr(bundle, "is_encoder_decoder", False))
        fmt = prompt_format  # None: the bundle's own (what the run trained with)
        self.gen_collator = Collator(
            bundle, max_length=max_length, for_generation=True, prompt_format=fmt
        )
        self.score_collator = Collator(bundle, max_length=max_length, prompt_format=fmt)
        if synced_gpus is None:
            import torch.distributed as dist

            synced_gpus = dist.is_initialized() and dist.get_world_size() > 1
        self.synced_gpus = synced_gpus
        self.naive = naive
        self._cross_layers = _cross_layers(self.model)

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        param = next(self.model.parameters())
        return to_device(batch, param.device, param.dtype)

    def generate(self, examples: list[Example]) -> list[str]:
        import torch

        inputs = self._inputs(self.gen_collator(examples))
        with torch.no_grad():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.gen_collator.stop_ids(),  # chat: the end-of-turn token too
                synced_gpus=self.synced_gpus,
            )
        new = out if self.seq2seq else out[:, inputs["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [first_line(t) for t in texts]

    def score_options(self, examples: list[Example]) -> list[list[float]]:
        """Each option's summed log-probability (see the module docstring). The prompt and its
        images are encoded once per example and every option scored from that (`_cached`);
        `naive=True` runs the whole prompt once per option instead (the reference the equality
        tests and the bench compare against)."""
        if self.naive:
            return self.score_options_naive(examples)
        return [self._cached(e) if len(e.options) > 1 else self._naive_one(e) for e in examples]

    def score_options_naive(self, examples: list[Example]) -> list[list[float]]:
        """One full forward (prompt, images, option) per option, every option of the batch in
        one padded batch."""
        import torch

        flat = [dataclasses.replace(e, target=o) for e in examples for o in e.options]
        if not flat:
            return [[] for _ in examples]
        batch = self.score_collator(flat)
        inputs = self._inputs(batch)
        labels = inputs["labels"] if self.seq2seq else inputs.pop("labels")
        with torch.no_grad():
            logits = self.model(**inputs).logits
        losses, _ = example_losses(logits, labels, shift=not self.seq2seq)
        scores = (-losses).tolist()  # summed log p of the option's tokens and eos
        out, at = [], 0
        for e in examples:
            out.append(scores[at : at + len(e.options)])
            at += len(e.options)
        return out

    def _naive_one(self, example: Example) -> list[float]:
        return self.score_options_naive([example])[0] if example.options else []

    def _cached(self, example: Example) -> list[float]:
        """One example's option scores from one encoding of its prompt and images.

        The first option's row is exactly the naive path's row (prompt, images, option, eos,
        dummy image): its forward scores that option and fills the key/value cache, which is
        cut back to the prompt and repeated for the other options; their tokens then run
        against it (positions, token types and Mllama's cross-attention mask sliced from the
        naive batch, so every token sees what it sees there). Encoder-decoders (BLIP-2 + T5)
        run the vision tower, Q-Former and encoder once and the decoder once per option.
        A chat prompt that a long option makes the collator shorten differs per option: such
        an example is scored the naive way."""
        import torch

        flat = [dataclasses.replace(example, target=o) for o in example.options]
        rows = self.score_collator.encode_many(flat)
        p = rows[0].prompt_length
        if any(r.prompt_length != p or r.input_ids[:p] != rows[0].input_ids[:p] for r in rows):
            return self._naive_one(example)
        first = self._inputs(self.score_collator.pad(rows[:1]))
        rest = self._inputs(self.score_collator.pad(rows[1:]))
        with torch.no_grad():
            if self.seq2seq:
                return self._cached_seq2seq(first, rest)
            labels0 = first.pop("labels")
            out = self.model(**first, use_cache=True, past_key_values=self._new_cache())
            head, _ = example_losses(out.logits, labels0)
            cache = out.past_key_values
            _crop(cache, p, self._cross_layers)
            labels = rest.pop("labels")
            # the option tokens only: the dummy image block after them is never attended
            end = int((labels != IGNORE_INDEX).nonzero()[:, 1].max()) + 1
            cont = {
                k: v[:, p:end] for k, v in rest.items() if k in _PER_TOKEN and v.dim() >= 2
            }
            # No attention mask: the cached prompt has no padding, the options' right padding
            # comes after their tokens, and with it M-RoPE models would number the positions
            # from the mask's full width.
            cache.batch_repeat_interleave(len(rows) - 1)
            n = end - p
            logits = self.model(
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

    def _new_cache(self) -> object:
        """None (the model makes its own cache), or for a model with sliding-window layers
        (Gemma 3) a cache that keeps the states beyond the window, so it can be cut back."""
        config = getattr(_base(self.model), "config", None)
        text = config.get_text_config(decoder=True) if config is not None else None
        if "sliding_attention" not in (getattr(text, "layer_types", None) or ()):
            return None
        from transformers import DynamicCache

        cache = DynamicCache(config=config)
        cache.activate_past_recording()
        return cache

    def _cached_seq2seq(self, first: dict[str, Any], rest: dict[str, Any]) -> list[float]:
        import torch

        out = self.model(**first, return_dict=True)
        head, _ = example_losses(out.logits, first["labels"], shift=False)
        encoded = out.language_model_outputs.encoder_last_hidden_state
        k = rest["labels"].shape[0]
        lm = _base(self.model).language_model
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


def predict_batched(
    fn: Any, examples: Sequence[Example], batch_size: int, bar: Any = None
) -> list[Any]:
    """Apply a batch function over `examples` in order, `batch_size` at a time (advancing the
    tqdm `bar`, when given, by each batch's examples)."""
    out: list[Any] = []
    for i in range(0, len(examples), batch_size):
        out.extend(fn(list(examples[i : i + batch_size])))
        if bar is not None:
            bar.update(len(examples[i : i + batch_size]))
    return out
