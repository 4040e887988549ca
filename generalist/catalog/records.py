"""The contracts between stages: Record (adapter/shard output), Example (task output), Dataset."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from generalist.catalog.loading import load_builtins
from generalist.catalog.registry import Registry, close_matches_hint
from generalist.errors import ConfigError, DataError

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Record:
    """One item of a dataset as its adapter yields it and a shard stores it.

    `images` are encoded PNG/JPEG bytes (never pickled); `fields` and `meta` are plain JSON.
    `source` says where a record read from a shard lies ("shard <path> sample <key>", the path
    redacted as generalist.redact does; set by the shard reader, not stored): an image that
    fails to decode later, in the collator, is named by it. Not part of equality.
    """

    id: str
    split: str
    images: tuple[bytes, ...] = ()
    fields: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)
    source: str = field(default="", compare=False)


@dataclass(frozen=True)
class Example:
    """A formatted training/evaluation example.

    The model is trained on `prompt + " " + target`; the prompt ends with "A:". `images` holds
    one image per IMAGE_TOKEN in the prompt, in order. `options` is the answer set for option
    scoring (classification, multiple choice), empty for free text. `turns` holds the same
    prompt in parts for a chat template (generalist.batching.chat); None for examples built by
    hand, which chat renders as one user turn. `source` is the record's (Record.source) and
    `image_sources` where each image came from (the record's, or an image exemplar's), for the
    collator's errors; empty for examples built by hand. Neither is part of equality.
    """

    task: str
    id: str
    prompt: str
    target: str
    images: tuple[bytes, ...] = ()
    options: tuple[str, ...] = ()
    template_index: int = 0
    exemplar_ids: tuple[str, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)
    turns: ChatTurns | None = None
    source: str = field(default="", compare=False)
    image_sources: tuple[str, ...] = field(default=(), compare=False)


@dataclass(frozen=True)
class ChatTurns:
    """An Example's prompt in parts, for a chat template: the instruction (a system turn, or
    the start of the first user turn), exemplars as (question, answer) turn pairs, and the
    question itself without its "A:" (the assistant turn answers it). The questions carry the
    same "<image>" markers as `prompt`, in the same order."""

    instruction: str
    shots: tuple[tuple[str, str], ...]
    question: str


class BadRecord(DataError):
    """A row-level problem an adapter *yields* (not raises) so iteration can go on.

    The shard writer raises it by default, or skips and counts it with --skip-bad. The message
    names the file and row. File-level problems (missing file, wrong columns) are raised.
    """


# iter_records(source, split, **options): options only for a dataset that declares them.
IterRecords = Callable[..., Iterator[Record | BadRecord]]


@dataclass(frozen=True)
class Dataset:
    """A public dataset and the adapter that reads its published files.

    `iter_records(source, split)` yields Records of one split from the files under `source`.
    `options` declares the adapter's options (name -> one line of help: values and default);
    `records()` checks them and passes them on as keyword arguments of string values
    (`generalist shard D --option name=value`).
    `default_source` returns a source that needs no download (easy-vqa ships in its package).
    `labels` is the declared label set where the dataset has one; adapters refuse others.
    `images_split_disjoint`: an image may appear in one split only (datasets split by patient or
    image). False where the published split reuses images across splits (VQA-RAD asks its test
    questions about training images): the writer then allows it and the manifest says so.
    """

    name: str
    iter_records: IterRecords
    splits: tuple[str, ...] = SPLITS
    version: int = 1
    description: str = ""
    published_format: str = ""
    homepage: str = ""
    labels: tuple[str, ...] = ()
    default_source: Callable[[], Path] | None = None
    images_split_disjoint: bool = True
    options: Mapping[str, str] = field(default_factory=dict)

    def check_options(self, options: Mapping[str, str]) -> None:
        """ConfigError naming an option the dataset does not declare, and the ones it does."""
        for name in options:
            if name in self.options:
                continue
            if not self.options:
                raise ConfigError(f"dataset {self.name!r} takes no options; got {name!r}")
            known = "; ".join(f"{k}: {v}" for k, v in self.options.items())
            hint = close_matches_hint(name, list(self.options))
            hint = f"{hint} " if hint.startswith("did you mean") else ""
            raise ConfigError(
                f"dataset {self.name!r} has no option {name!r}; {hint}its options: {known}"
            )

    def records(
        self, source: Path, split: str, options: Mapping[str, str] | None = None
    ) -> Iterator[Record | BadRecord]:
        """The adapter's records of `split`, with `options` checked and passed on."""
        options = dict(options or {})
        self.check_options(options)
        return self.iter_records(source, split, **options)


DATASETS: Registry[Dataset] = Registry("dataset", load_builtins)
