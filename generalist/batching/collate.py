"""Examples -> model batches: tokenise with the model's processor, mask prompts out of labels.

Sequence layout (training, right padding; generalist.batching.padding pads the rows):

    [bos] prompt-with-expanded-image-tokens | " " target </s> | dummy image block | <pad> ...
    labels: -100 .............................| target ids, eos | -100 .............| -100

`model.prompt_format: chat`: the prompt is the chat template up to the assistant turn, the
labels that turn through its end token (generalist.batching.chat). Per family (LLaVA, BLIP-2,
PaliGemma, Qwen2/2.5/3-VL, Gemma 3, Mllama, Idefics3 / SmolVLM, LLaVA-NeXT / OneVision):
markers, target spacing and per-token ids are token_layout's; tiled image tensors mllama_inputs'
and tiled_images'; image caps (model.max_pixels, max_tiles) image_caps'.

- The prompt goes through the HF processor (so "<image>" expands exactly as it says); the
  target is tokenised separately and appended, so the prompt of a training sequence tokenises
  exactly as the generation prompt does.
- Truncation keeps the whole target: the prompt is cut from the LEFT (after bos): the
  instruction and exemplars go first (chat: whole exemplar turns first). A cut that would
  reach an image's tokens, or a target that does not fit, raises DataError (raise max_length).
- Every example without images gets a dummy blank image (dummy_images="per_example", default;
  "per_batch" adds one only to a batch with no image at all; "off" never): its tokens come
  after the real tokens (training) or before the padding (generation) with attention_mask 0
  and labels -100, so no real token attends to them, yet every rank runs the vision tower each
  step: ZeRO-3 hangs when ranks run different modules. (M-RoPE models: none beside a real
  image, see token_layout.)
- for_generation=True: prompt only, left padding, no labels.
- Encoder-decoder models (BLIP-2 + T5): input_ids hold the prompt (right padded, dummy as
  above) and labels the target + eos, padded separately with -100; one image per example.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, Literal

from generalist.batching.chat import ChatFormat
from generalist.batching.image_caps import BadImage, cap_pixels, decode_images, processor_kwargs
from generalist.batching.mllama_inputs import as_padding, widen_tiles
from generalist.batching.padding import IGNORE_INDEX, Encoded, pad_rows
from generalist.batching.tiled_images import dummy_image, dummy_kwargs, join_images
from generalist.batching.token_layout import TEXT_KEYS, layout_for, split_images
from generalist.batching.truncation import truncate_left
from generalist.catalog.records import Example
from generalist.catalog.task import IMAGE_TOKEN
from generalist.errors import ConfigError, DataError
from generalist.model.bundle import ModelBundle


class Collator:
    """Callable: list[Example] -> dict(input_ids, attention_mask, labels, pixel_values,
    task_ids, task_names, example_ids). See the module docstring for the layout.

    tasks: task names in a fixed order; batch["task_ids"] indexes it (per-task losses).
    prompt_format: "raw" | "chat"; None means the bundle's (model.prompt_format).
    """

    def __init__(
        self,
        bundle: ModelBundle,
        max_length: int,
        for_generation: bool = False,
        dummy_images: Literal["per_example", "per_batch", "off"] = "per_example",
        tasks: Sequence[str] | None = None,
        pad_to_multiple_of: int | None = None,
        prompt_format: str | None = None,
    ) -> None:
        if max_length < 8:
            raise ConfigError(f"max_length {max_length} is too small (at least 8)")
        self.bundle = bundle
        self.processor = bundle.processor
        self.tokenizer = bundle.tokenizer
        self.max_length = max_length
        self.for_generation = for_generation
        self.text_only = bundle.image_token is None
        self.dummy_mode = "off" if self.text_only else dummy_images
        self.tasks = list(tasks) if tasks is not None else None
        self.pad_to_multiple_of = pad_to_multiple_of
        self.pad_id = self.tokenizer.pad_token_id
        if self.pad_id is None:
            raise ConfigError("the tokenizer has no pad token; set one (e.g. the eos token)")
        self.eos_id = self.tokenizer.eos_token_id
        self.seq2seq = bool(bundle.is_encoder_decoder)
        self.layout = layout_for(bundle)  # per-family markers, target spacing, token types
        self._dummy: tuple[list[int], dict[str, Any]] | None = None
        self.max_pixels = getattr(bundle.config, "max_pixels", None)  # image_caps
        self.max_image_pixels = getattr(bundle.config, "max_image_pixels", None)
        self.image_kwargs, self.model_tiles = processor_kwargs(bundle, self.layout.kind)
        fmt = prompt_format or getattr(bundle.config, "prompt_format", "raw")
        self.chat = ChatFormat(bundle) if fmt == "chat" else None
        # a template that writes bos itself: the tokenizer must not add a second one
        self._text_kwargs = (
            {"add_special_tokens": False} if self.chat and self.chat.renders_bos else {}
        )

    # -- encoding -------------------------------------------------------------------------
    def _images(self, example: Example) -> list[Any]:
        # capped at model.max_pixels; above model.max_image_pixels refused before decoding
        return decode_images(example, self.max_pixels, self.max_image_pixels)

    def _process(self, text: str, images: list[Any], kw: dict | None = None) -> tuple[list, dict]:
        return self._process_many([text], [images], kw)[0]  # one prompt: (ids, image tensors)

    def _process_many(
        self, texts: list[str], images: list[list[Any]], kw: dict[str, Any] | None = None
    ) -> list[tuple[list[int], dict[str, Any]]]:
        """Prompts through the processor, one call per kind (with / without images)."""
        kw = kw or {}
        if self.text_only:
            return [(list(ids), {}) for ids in self.tokenizer(texts, **kw)["input_ids"]]
        out: list[Any] = [None] * len(texts)
        plain = [i for i, im in enumerate(images) if not im]
        if plain:
            own = [self.layout.text_only_ids(self.tokenizer, texts[i]) for i in plain]
            if None in own:
                own = self.processor(text=[texts[i] for i in plain], **kw)["input_ids"]
            for i, ids in zip(plain, own):
                out[i] = (list(ids), {})
        rich = [i for i, im in enumerate(images) if im]
        if rich:
            flat = self.layout.processor_images([images[i] for i in rich])
            kw = {**self.image_kwargs, **kw}
            enc = self.processor(text=[texts[i] for i in rich], images=flat, **kw)
            parts = split_images(enc, [len(images[i]) for i in rich])
            if parts is not None and self.model_tiles:  # Mllama under model.max_tiles
                cap = self.image_kwargs["max_image_tiles"]
                parts = [widen_tiles(p, cap, self.model_tiles) for p in parts]
            if parts is None:  # an unknown image-output layout: one call per example
                for i in rich:
                    one = self.processor(text=texts[i], images=images[i], return_tensors="pt", **kw)
                    extra = {k: v for k, v in one.items() if k not in TEXT_KEYS}
                    out[i] = (one["input_ids"][0].tolist(), extra)
                return out
            for i, ids, part in zip(rich, enc["input_ids"], parts):
                out[i] = (list(ids), part)
        return out

    def dummy_block(self) -> tuple[list[int], dict[str, Any]]:
        """(token ids, image tensors) of a blank image as the processor expands it."""
        if self._dummy is None:
            blank = cap_pixels(dummy_image(self.layout.kind), self.max_pixels)
            kw = dummy_kwargs(self.layout.kind)  # Idefics3: one tile
            ids, extra = self._process(self.layout.dummy_text(), [blank], kw)
            if self.layout.kind == "mllama":  # no token; the processor's padding image
                ids, extra = [], as_padding(extra)
            self._dummy = ([i for i in ids if i != self.tokenizer.bos_token_id], extra)
        return self._dummy

    def target_ids(self, target: str) -> list[int]:
        """The target's tokens (after a space) followed by eos: what the raw format's labels
        hold (chat: ChatFormat.target_ids)."""
        return self._target_ids([target])[0]

    def stop_ids(self) -> list[int]:
        """Token ids generation stops at: eos, and the chat template's end-of-turn token."""
        return self.chat.stop_ids() if self.chat is not None else [self.eos_id]

    def _target_ids(self, targets: list[str]) -> list[list[int]]:
        prefix = self.layout.target_prefix  # PaliGemma: no space after its prompt's "\n"
        enc = self.tokenizer([prefix + t for t in targets], add_special_tokens=False)
        return [[*ids, self.eos_id] for ids in enc["input_ids"]]

    def _prompt_text(self, example: Example) -> str:
        """The prompt with its "<image>" markers checked and mapped to the processor's."""
        where = f"task {example.task!r} example {example.id!r}"
        turns = example.turns if self.chat is not None else None
        text = example.prompt if turns is None else "".join([*sum(turns.shots, ()), turns.question])
        n_markers = text.count(IMAGE_TOKEN)
        if self.text_only and example.images:
            raise DataError(f"{where} has images but the model is a text-only causal LM")
        if n_markers != len(example.images):
            raise DataError(
                f"{where}: the prompt has {n_markers} {IMAGE_TOKEN} markers but "
                f"{len(example.images)} images"
            )
        if self.layout.kind == "blip2" and len(example.images) > 1:
            raise DataError(f"{where}: BLIP-2 takes one image per example, not {n_markers}")
        if self.chat is not None:
            return self.chat.prompt_text(example)
        return self.layout.prompt_text(example.prompt, n_markers)

    def encode(self, example: Example) -> Encoded:
        """Tokenise one example (truncating the prompt from the left if needed)."""
        return self.encode_many([example])[0]

    def encode_many(
        self, examples: Sequence[Example], on_bad: Callable[[str], None] | None = None
    ) -> list[Encoded]:
        """Tokenise examples; the same result as encode() on each, in batched calls.

        An image that does not decode (or a decompression bomb) raises BadImage naming shard
        and key; with `on_bad` (skip_bad) that example is left out and `on_bad(message)` called,
        so fewer Encoded may come back. The same examples always drop the same way, so a resumed
        run rebuilds exactly the batches an uninterrupted one cut.
        """
        if on_bad is None:
            images = [self._images(e) for e in examples]
        else:
            kept: list[Example] = []
            images: list[list[Any]] = []
            for example in examples:
                try:
                    images.append(self._images(example))
                except BadImage as err:
                    on_bad(str(err))
                    continue
                kept.append(example)
            examples = kept
        if not examples:
            return []
        texts = [self._prompt_text(e) for e in examples]
        processed = self._process_many(texts, images, self._text_kwargs)
        if self.for_generation:
            targets: list[list[int]] = [[] for _ in examples]
        elif self.chat is not None:
            targets = [self.chat.target_ids(e, e.target) for e in examples]
        else:
            targets = self._target_ids([e.target for e in examples])
        if self.chat is not None:  # too long: exemplar turns go first, before any cut
            fitted = [self._fit(*args) for args in zip(examples, processed, targets)]
            examples, processed = [f[0] for f in fitted], [f[1] for f in fitted]
        return [self._finish(*args) for args in zip(examples, processed, targets)]

    def _fit(
        self, example: Example, processed: tuple[list[int], dict[str, Any]], target: list[int]
    ) -> tuple[Example, tuple[list[int], dict[str, Any]]]:
        assert self.chat is not None
        while len(processed[0]) + len(target) > self.max_length:
            shorter = self.chat.drop_shot(example)
            if shorter is None:
                break
            example, text = shorter, self._prompt_text(shorter)
            processed = self._process_many([text], [self._images(example)], self._text_kwargs)[0]
        return example, processed

    def _finish(
        self, example: Example, processed: tuple[list[int], dict[str, Any]], target: list[int]
    ) -> Encoded:
        where = f"task {example.task!r} example {example.id!r}"
        prompt, images = processed
        if self.seq2seq and len(target) > self.max_length:
            raise DataError(
                f"{where}: the target ({len(target)} tokens) does not fit in max_length "
                f"{self.max_length}; raise max_length"
            )
        prompt = self._truncate(prompt, 0 if self.seq2seq else len(target), where)
        dummy: list[int] = []
        has_dummy = not example.images and self.dummy_mode == "per_example"
        if has_dummy:
            dummy, images = self.dummy_block()
        if self.seq2seq:  # the encoder reads the prompt, the decoder's labels are the target
            return Encoded(
                prompt, target, images, example.task, example.id, len(prompt), dummy, has_dummy
            )
        return Encoded(
            input_ids=prompt + target,
            labels=[IGNORE_INDEX] * len(prompt) + target,
            images=images,
            task=example.task,
            id=example.id,
            prompt_length=len(prompt),
            dummy=list(dummy),
            has_dummy=has_dummy,
        )

    def _truncate(self, prompt: list[int], n_target: int, where: str) -> list[int]:
        keep = {self.tokenizer.bos_token_id, self.bundle.image_token_id}
        image_ids = {self.bundle.image_token_id, *self.layout.protected_ids(self.tokenizer)}
        return truncate_left(prompt, n_target, self.max_length, keep, image_ids, where)

    # -- padding ---------------------------------------------------------------------------
    def __call__(self, examples: Sequence[Example]) -> dict[str, Any]:
        return self.pad(self.encode_many(examples))

    def pad(self, encoded: Sequence[Encoded]) -> dict[str, Any]:
        """Pad encoded examples into a batch (right for training, left for generation)."""
        import torch

        if not encoded:
            raise DataError("cannot collate an empty batch")
        rows = list(encoded)
        if self.layout.dummy_only_without_images and any(
            not r.has_dummy and r.images for r in rows
        ):
            rows = [
                replace(r, images={}, dummy=[], has_dummy=False) if r.has_dummy else r for r in rows
            ]
        if self.dummy_mode == "per_batch" and not any(r.images for r in rows):
            ids, images = self.dummy_block()
            rows[0] = replace(rows[0], images=images, dummy=list(ids), has_dummy=True)
        width = max(r.length for r in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        rows_out = pad_rows(rows, width, self.pad_id, self.for_generation, self.seq2seq)
        batch: dict[str, Any] = {
            "input_ids": torch.tensor(rows_out["ids"], dtype=torch.long),
            "attention_mask": torch.tensor(rows_out["mask"], dtype=torch.long),
        }
        if rows_out["labels"]:
            batch["labels"] = torch.tensor(rows_out["labels"], dtype=torch.long)
        if self.layout.prefix_lm:
            batch["token_type_ids"] = torch.tensor(rows_out["types"], dtype=torch.long)
        if self.layout.image_token_types:  # Gemma 3: 1 on image tokens, bidirectional blocks
            is_soft = batch["input_ids"] == self.layout.soft_token_id
            batch["token_type_ids"] = is_soft.to(torch.long)
        if self.layout.mm_token_types:  # 1 on image tokens (0 text): M-RoPE's 3-D positions
            is_image = batch["input_ids"] == self.bundle.image_token_id
            batch["mm_token_type_ids"] = is_image.to(torch.int)
        image_id = int(self.bundle.image_token_id or 0)  # tiles padded as processors pad
        images = [r.images for r in rows]
        batch.update(join_images(self.layout.kind, images, batch["input_ids"], image_id))
        batch["task_names"] = [r.task for r in rows]
        batch["example_ids"] = [r.id for r in rows]
        if self.tasks is not None:
            batch["task_ids"] = torch.tensor([self._task_index(r.task) for r in rows])
        return batch

    def _task_index(self, task: str) -> int:
        assert self.tasks is not None
        if task not in self.tasks:
            raise DataError(f"task {task!r} is not in the collator's task list {self.tasks}")
        return self.tasks.index(task)
