"""Token-mask preflight: before the first step, a few examples of every task go through the run's
collator, and the run stops with a DataError naming the task and example when a target

- is empty (nothing to learn from),
- is truncated away (no label tokens: the collator's own DataError, re-raised here),
- or its label tokens do not decode back to the target, or do not end with the end token
  (eos, or the chat template's end-of-turn token): the labels sit somewhere the prompt format
  does not say.

Other tools skip such samples silently and train on nothing; a bad template or a max_length that
is too small shows up here, in seconds, instead of as a flat loss hours later.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import islice
from pathlib import Path

from generalist.batching.collate import Collator
from generalist.batching.image_caps import BadImage
from generalist.batching.padding import IGNORE_INDEX
from generalist.catalog.exemplars import ExemplarPool, format_example
from generalist.catalog.mixture import Mixture
from generalist.catalog.records import Example, Record
from generalist.catalog.task import TASKS
from generalist.errors import DataError
from generalist.shards.manifest import split_shards
from generalist.shards.reader import iter_shard

PER_TASK = 4


def _words(text: str) -> str:
    """Text compared case- and space-blind (a word tokenizer lower-cases and spaces out)."""
    return "".join(text.lower().split())


def check_example(collator: Collator, example: Example) -> None:
    """Raise DataError (naming the task and example) unless the example's labels are its target
    followed by the end token; see the module docstring."""
    where = f"token-mask preflight: task {example.task!r} example {example.id!r}"
    if not example.target.strip():
        raise DataError(f"{where}: the target is empty; fix the task's parts or the data")
    try:
        enc = collator.encode(example)
    except DataError as err:
        kind = BadImage if isinstance(err, BadImage) else DataError  # skip_bad passes it over
        raise kind(f"token-mask preflight: {err}") from None
    labels = [t for t in enc.labels if t != IGNORE_INDEX]
    if not labels:
        raise DataError(f"{where}: no label tokens (the target was truncated away)")
    stops = collator.stop_ids()
    if labels[-1] not in stops:
        raise DataError(
            f"{where}: the labelled span ends with token {labels[-1]}, not the end token "
            f"{stops}: the labels are not where the prompt format puts the target"
        )
    got = collator.tokenizer.decode(labels, skip_special_tokens=True)
    if _words(got) != _words(example.target):
        raise DataError(
            f"{where}: the label tokens decode to {got.strip()!r}, not the target "
            f"{example.target.strip()!r} (a tokenizer that cannot write it, or a template "
            "that adds text to the assistant turn)"
        )


def check_examples(collator: Collator, examples: Iterable[Example], skip_bad: bool = False) -> int:
    """check_example on each; the number checked. With skip_bad an example whose image does
    not decode is passed over (training drops and counts it when the stream reaches it)."""
    n = 0
    for example in examples:
        try:
            check_example(collator, example)
        except BadImage:
            if not skip_bad:
                raise
            continue
        n += 1
    return n


def preflight_examples(
    mixture: Mixture,
    shards: Path | str,
    seed: int = 0,
    per_task: int = PER_TASK,
    skip_bad: bool = False,
) -> list[Example]:
    """The first `per_task` train records of every task with a rate, formatted as training
    formats them (exemplars drawn from the next records of the split)."""
    out: list[Example] = []
    for name, rate in mixture.tasks:
        if rate <= 0:
            continue
        task = TASKS.get(name)
        records = list(islice(_train_records(task.dataset, shards, skip_bad), per_task + 32))
        pool = ExemplarPool(task, records) if task.shots and len(records) > 1 else None
        for record in records[:per_task]:
            out.append(format_example(task, record, pool, seed=seed, train=True))
    return out


def _train_records(dataset: str, shards: Path | str, skip_bad: bool) -> Iterable[Record]:
    for shard in split_shards(shards, dataset, "train"):
        yield from iter_shard(shard.path, skip_bad=skip_bad, count=shard.count)


def check_token_masks(
    collator: Collator,
    mixture: Mixture,
    shards: Path | str,
    seed: int = 0,
    per_task: int = PER_TASK,
    skip_bad: bool = False,
) -> int:
    """The training preflight: `per_task` examples of every task through `collator`."""
    examples: Sequence[Example] = preflight_examples(mixture, shards, seed, per_task, skip_bad)
    return check_examples(collator, examples, skip_bad)
