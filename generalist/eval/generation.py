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
- generate runs in batches sorted by prompt length (`predict_sorted`, results in input order),
  each task with its own budget (Task.generation_budget).
- score_options: for each option the sequence `prompt + " " + option + eos` (chat: the option
  as the assistant turn; exactly what training sees for a correct answer); the score is the
  summed log-probability of the option's tokens and eos under teacher forcing. Picking the
  best option is decoding constrained to the option set (what BiomedGPT does with a trie,
  done exactly over whole options); softmax over the scores gives the class probabilities
  that macro-AUC needs. The prompt and its images are encoded once per example and every
  option scored from that (generalist.eval.option_cache); the scores equal the naive path's.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from generalist.batching.collate import Collator
from generalist.batching.losses import example_losses
from generalist.batching.model_inputs import to_device
from generalist.catalog.records import Example
from generalist.eval.option_cache import cached_option_scores
from generalist.model.bundle import ModelBundle

if TYPE_CHECKING:
    import torch
    from tqdm import tqdm

T = TypeVar("T")
DEFAULT_MAX_NEW_TOKENS = 32


class Predictor(Protocol):
    def generate(self, examples: list[Example], max_new_tokens: int | None = None) -> list[str]: ...

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
    max_new_tokens: a budget for every call (None: each call's, i.e. the task's).
    naive: the reference paths the fast ones are tested and benched against: every option's
        prompt run in full (score_options_naive) and generation batches in input order.
    """

    def __init__(
        self,
        bundle: ModelBundle,
        max_length: int,
        max_new_tokens: int | None = None,
        model: torch.nn.Module | None = None,
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

    def _inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        param = next(self.model.parameters())
        return to_device(batch, param.device, param.dtype)

    def generate(self, examples: list[Example], max_new_tokens: int | None = None) -> list[str]:
        """Greedy answers of one batch. The budget: the predictor's max_new_tokens when set
        (`generalist evaluate --max-new-tokens`), else this call's (the task's, see
        Task.generation_budget), else DEFAULT_MAX_NEW_TOKENS. generate() stops as soon as every
        sequence has produced a stop token."""
        import torch

        inputs = self._inputs(self.gen_collator(examples))
        with torch.no_grad():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens or max_new_tokens or DEFAULT_MAX_NEW_TOKENS,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
                eos_token_id=self.gen_collator.stop_ids(),  # chat: the end-of-turn token too
                synced_gpus=self.synced_gpus,
            )
        new = out if self.seq2seq else out[:, inputs["input_ids"].shape[1] :]
        texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
        return [first_line(t) for t in texts]

    @property
    def prompt_format(self) -> str:
        """ "chat" or "raw": the format the prompts are fed in."""
        return "chat" if self.gen_collator.chat is not None else "raw"

    def fed_prompt(self, example: Example) -> str:
        """The prompt text as the model is fed it (the chat template's rendering in a chat run;
        image markers as the processor expands them)."""
        return self.gen_collator._prompt_text(example)

    def length_key(self, example: Example) -> int:
        """The prompt's text tokens (images aside): the key generation batches sort by."""
        text = self.fed_prompt(example)
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def score_options(self, examples: list[Example]) -> list[list[float]]:
        """Each option's summed log-probability (see the module docstring). The prompt and its
        images are encoded once per example and every option scored from that (`_cached`);
        `naive=True` runs the whole prompt once per option instead (the reference the equality
        tests and the bench compare against)."""
        if self.naive:
            return self.score_options_naive(examples)
        return [
            cached_option_scores(self, e) if len(e.options) > 1 else self._naive_one(e)
            for e in examples
        ]

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


def predict_sorted(
    predictor: Predictor,
    examples: Sequence[Example],
    batch_size: int,
    max_new_tokens: int | None = None,
    bar: tqdm | None = None,
) -> list[str]:
    """Generations of `examples` in input order, computed in batches of similar prompt length
    (fewer pad tokens, and a batch of short prompts stops with its short answers); a
    predictor without `length_key`, or with `naive` set, runs them in input order."""
    key = getattr(predictor, "length_key", None)
    order = list(range(len(examples)))
    if key is not None and not getattr(predictor, "naive", False):
        lengths = [(key(e), len(e.images)) for e in examples]
        order.sort(key=lambda i: lengths[i])

    def gen(batch: list[Example]) -> list[str]:
        if max_new_tokens is None:
            return predictor.generate(batch)
        return predictor.generate(batch, max_new_tokens=max_new_tokens)

    texts = predict_batched(gen, [examples[i] for i in order], batch_size, bar)
    out: list[str] = [""] * len(examples)
    for i, text in zip(order, texts):
        out[i] = text
    return out


def predict_batched(
    fn: Callable[[list[Example]], Iterable[T]],
    examples: Sequence[Example],
    batch_size: int,
    bar: tqdm | None = None,
) -> list[T]:
    """Apply a batch function over `examples` in order, `batch_size` at a time (advancing the
    tqdm `bar`, when given, by each batch's examples)."""
    out: list[T] = []
    for i in range(0, len(examples), batch_size):
        out.extend(fn(list(examples[i : i + batch_size])))
        if bar is not None:
            bar.update(len(examples[i : i + batch_size]))
    return out
