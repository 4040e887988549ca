"""Task declarations: how a Record becomes an instruction prompt and a target (Med-PaLM M style).

Prompt layout (pinned by tests/catalog/test_templates.py):

    Instructions: <one instruction paraphrase>
    Given <img>. <context>              <- exemplar block(s), answer filled in
    Q: <question>
    Options: (A) ... (B) ...
    A: <exemplar answer>
    Given <image>. <context>            <- the example itself, answer left for the model
    Q: <question>
    Options: (A) ... (B) ...
    A:

`<image>` (IMAGE_TOKEN) marks where a real image goes; the collator expands it as the model's
processor asks. A text-only exemplar keeps the literal `<img>` (IMAGE_PLACEHOLDER) instead of its
image, as Med-PaLM M does; `exemplar_images=True` passes exemplar images to the model instead.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from generalist.catalog.kinds import KINDS, TaskKind
from generalist.catalog.loading import load_builtins
from generalist.catalog.parts import PromptParts
from generalist.catalog.records import ChatTurns, Example, Record
from generalist.catalog.registry import Registry
from generalist.errors import DataError, GeneralistError

IMAGE_TOKEN = "<image>"
IMAGE_PLACEHOLDER = "<img>"
OPTION_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Metric names of each kind (generalist.catalog.kinds, the one table), for task modules.
KIND_METRICS: dict[str, tuple[str, ...]] = {k: spec.metrics for k, spec in KINDS.items()}


def normalize_text(text: str) -> str:
    """Lower-case, strip punctuation at the ends and collapse whitespace (answer comparison)."""
    text = re.sub(r"\s+", " ", text.strip().lower())
    return text.strip(" .,;:!?\"'")


@dataclass(frozen=True)
class Task:
    """A frozen task declaration. See the module docstring for the prompt it renders.

    parts: record fields -> PromptParts (question, target, context, options).
    instructions: paraphrases of the instruction; training samples one per example with the
        stream's rng, evaluation uses `instructions[0]` unless told otherwise.
    shots: exemplars per prompt (0, 1 or 2), drawn from the train split only.
    max_new_tokens: the generation budget at evaluation (None: the kind's, see
        generalist.catalog.kinds).
    train_split: None for evaluation-only tasks (PubMedQA).
    """

    name: str
    kind: TaskKind
    dataset: str
    instructions: tuple[str, ...]
    parts: Callable[[Mapping[str, Any]], PromptParts]
    shots: int = 1
    exemplar_images: bool = False
    labels: tuple[str, ...] = ()
    metrics: tuple[str, ...] = ()
    primary_metric: str = ""
    postprocess: Callable[[str], str] = normalize_text
    train_split: str | None = "train"
    eval_split: str = "test"
    version: int = 1
    max_new_tokens: int | None = None
    description: str = ""
    notes: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f"task {self.name!r}"
        if self.kind not in KINDS:
            raise GeneralistError(f"{where}: unknown kind {self.kind!r}; one of {list(KINDS)}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise GeneralistError(
                f"{where}: max_new_tokens must be >= 1, got {self.max_new_tokens}"
            )
        if not self.instructions or not all(isinstance(i, str) and i for i in self.instructions):
            raise GeneralistError(f"{where}: give at least one non-empty instruction string")
        if self.shots not in (0, 1, 2):
            raise GeneralistError(f"{where}: shots must be 0, 1 or 2, got {self.shots!r}")
        if KINDS[self.kind].class_labels and len(self.labels) < 2:
            raise GeneralistError(f"{where}: a classification task lists its labels (>= 2)")
        if not self.metrics:
            object.__setattr__(self, "metrics", KINDS[self.kind].metrics)
        if not self.primary_metric:
            object.__setattr__(self, "primary_metric", KINDS[self.kind].primary)
        if self.primary_metric not in self.metrics:
            raise GeneralistError(f"{where}: primary_metric {self.primary_metric!r} not in metrics")

    @property
    def generation_budget(self) -> int:
        """max_new_tokens at evaluation: the task's own, else its kind's."""
        return self.max_new_tokens or KINDS[self.kind].max_new_tokens

    def parts_of(self, record: Record) -> PromptParts:
        """PromptParts of a record, with a clear error naming the record when a field is missing."""
        try:
            parts = self.parts(record.fields)
        except KeyError as err:
            raise DataError(
                f"task {self.name!r}: record {record.id!r} has no field {err.args[0]!r} "
                f"(fields: {sorted(record.fields)}); "
                f"was it written by the {self.dataset!r} adapter?"
            ) from None
        if parts.options and parts.target not in parts.options:
            raise DataError(
                f"task {self.name!r}: record {record.id!r} target {parts.target!r} "
                f"is not among its options {list(parts.options)}"
            )
        return parts

    def format(
        self,
        record: Record,
        rng: random.Random | None = None,
        exemplars: Sequence[Record] = (),
        template: int | None = None,
    ) -> Example:
        """Render `record` (with `exemplars`) into an Example.

        template=None samples an instruction with `rng` (training) or takes the first when no
        rng is given (evaluation); an int picks that paraphrase.
        """
        if template is None:
            template = rng.randrange(len(self.instructions)) if rng is not None else 0
        if not 0 <= template < len(self.instructions):
            raise GeneralistError(
                f"task {self.name!r} has {len(self.instructions)} templates; no index {template}"
            )
        blocks, images, shots, sources = [], [], [], []
        for shot in exemplars:
            if shot.id == record.id:
                raise GeneralistError(
                    f"task {self.name!r}: record {record.id!r} is its own exemplar"
                )
            marker = IMAGE_TOKEN if self.exemplar_images else IMAGE_PLACEHOLDER
            shot_parts = self.parts_of(shot)
            blocks.append(render_block(shot_parts, len(shot.images), marker, shot_parts.target))
            shots.append((question_text(blocks[-1]), shot_parts.target))
            if self.exemplar_images:
                images.extend(shot.images)
                sources.extend([shot.source] * len(shot.images))
        parts = self.parts_of(record)
        blocks.append(render_block(parts, len(record.images), IMAGE_TOKEN, None))
        images.extend(record.images)
        sources.extend([record.source] * len(record.images))
        prompt = f"Instructions: {self.instructions[template]}\n" + "\n".join(blocks)
        turns = ChatTurns(self.instructions[template], tuple(shots), question_text(blocks[-1]))
        return Example(
            task=self.name,
            id=record.id,
            prompt=prompt,
            target=parts.target,
            images=tuple(images),
            options=parts.options,
            template_index=template,
            exemplar_ids=tuple(s.id for s in exemplars),
            meta=dict(record.meta),
            turns=turns,
            source=record.source,
            image_sources=tuple(sources),
        )


def render_options(options: Sequence[str]) -> str:
    return "Options: " + " ".join(f"({OPTION_LETTERS[i]}) {o}" for i, o in enumerate(options))


def question_text(block: str) -> str:
    """A rendered block without its last "A: ..." line: a chat template's user turn."""
    return block.rsplit("\n", 1)[0]


def render_block(parts: PromptParts, n_images: int, marker: str, answer: str | None) -> str:
    """One question block; `answer=None` leaves "A:" open for the model."""
    given = f"Given {' '.join([marker] * n_images)}. " if n_images else ""
    lines = []
    if parts.context:
        lines.append(given + parts.context)
        given = ""
    lines.append(f"{given}Q: {parts.question}")
    if parts.options:
        lines.append(render_options(parts.options))
    lines.append("A:" if answer is None else f"A: {answer}")
    return "\n".join(lines)


TASKS: Registry[Task] = Registry("task", load_builtins)
