"""`generalist render TASK`: the exact prompts and targets training (or evaluation) would see.

--chat MODEL renders them in the chat prompt format (`model.prompt_format: chat`) with MODEL's
chat template (a local dir or a cached hub id): the prompt up to the assistant turn, then the
labelled completion in [LABELS: ...] (the answer and the template's end-of-turn token).

--tokens MODEL shows what the collator builds for MODEL (its processor and config; no weights
are loaded): every token as [id piece], the trained ones (label = the id) starred, runs of one
image token folded, then the decoded trained span. With --chat MODEL too, in the chat format."""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from generalist.batching.chat import ChatFormat
from generalist.batching.collate import Collator
from generalist.batching.padding import IGNORE_INDEX
from generalist.catalog.exemplars import ExemplarPool, format_example
from generalist.catalog.loading import load_catalog
from generalist.catalog.records import DATASETS, Example, Record
from generalist.catalog.task import TASKS, Task
from generalist.cli.options import (
    add_dataset_option_argument,
    add_import_argument,
    parse_dataset_options,
)
from generalist.errors import GeneralistError
from generalist.model.bundle import ModelBundle
from generalist.model.config import LoraSettings, ModelConfig
from generalist.model.pretrained import detect_family, load_processor
from generalist.shards.manifest import read_records


def source_records(
    task: Task, source: Path | None, split: str, options: Mapping[str, str] | None = None
) -> Iterator[Record]:
    """Records straight from the dataset's published files via its adapter (and its options)."""
    dataset = DATASETS.get(task.dataset)
    if source is None:
        if dataset.default_source is None:
            raise GeneralistError(
                f"dataset {dataset.name!r} needs --source PATH (its published files) "
                f"or --shards ROOT (written by `generalist shard`)"
            )
        source = dataset.default_source()
    return dataset.records(Path(source), split, options)


def chat_format(model: str) -> ChatFormat:
    """The ChatFormat of a model dir or hub id's processor (its tokenizer for a causal LM)."""
    import types

    from transformers import AutoConfig

    vlm = hasattr(AutoConfig.from_pretrained(model), "vision_config")
    family = "image_text_to_text" if vlm else "causal_lm"
    processor = load_processor(model, family, key="--chat")
    tokenizer = getattr(processor, "tokenizer", processor)
    bundle = types.SimpleNamespace(processor=processor, tokenizer=tokenizer, family=family)
    return ChatFormat(bundle)  # type: ignore[arg-type]  (what ChatFormat reads of a bundle)


def weightless_bundle(model: str, chat: bool) -> ModelBundle:
    """A ModelBundle of MODEL's processor and config, without its weights: all the collator
    reads (the token layout follows the config's model_type)."""
    import types

    from transformers import AutoConfig

    family = detect_family(model, key="--tokens")
    processor = load_processor(model, family, key="--tokens")
    tokenizer = getattr(processor, "tokenizer", processor)
    image_token = getattr(processor, "image_token", None) if family != "causal_lm" else None
    image_token = getattr(image_token, "content", image_token)  # BLIP-2 keeps an AddedToken
    config = ModelConfig.parse(
        {"name_or_path": model, "prompt_format": "chat" if chat else "raw"}, where="--tokens"
    )
    stub = types.SimpleNamespace(config=AutoConfig.from_pretrained(model))
    return ModelBundle(stub, processor, tokenizer, image_token, family, config, LoraSettings())


def token_lines(collator: Collator, example: Example) -> list[str]:
    """[id piece] per token, trained ones starred, runs of one image token folded; then the
    decoded trained span (what the loss is on)."""
    encoded = collator.encode(example)
    tokenizer = collator.tokenizer
    rows = zip(encoded.input_ids, encoded.labels, strict=True)
    cells = []
    for (token, trained), run in itertools.groupby(
        rows, key=lambda r: (r[0], r[1] != IGNORE_INDEX)
    ):
        n = len(list(run))
        piece = tokenizer.convert_ids_to_tokens(token)
        folded = n > 1 and token == collator.bundle.image_token_id
        for _ in range(1 if folded else n):
            cells.append(
                f"[{'*' if trained else ''}{token} {piece}]" + (f" x{n}" if folded else "")
            )
    trained_ids = [
        t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX
    ]
    return [
        f"[TOKENS: {len(encoded.input_ids)} ids, {len(trained_ids)} trained (*)]",
        " ".join(cells),
        f"[TRAINED: {tokenizer.decode(trained_ids)!r}]",
    ]


def render_examples(
    task: Task,
    records: Iterator[Record],
    train_records: Iterator[Record] | None,
    count: int,
    seed: int,
    train: bool,
    template: int | None = None,
) -> list[Example]:
    """Format the first `count` records, with exemplars drawn from `train_records`."""
    pool = ExemplarPool(task, train_records) if task.shots and train_records is not None else None
    return [
        format_example(task, record, pool, seed=seed, train=train, template=template)
        for record in itertools.islice(records, count)
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="generalist render", description=__doc__)
    parser.add_argument("task")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--source", type=Path, help="the dataset's published files")
    data.add_argument("--shards", help="a shard root written by `generalist shard` (dir or URL)")
    parser.add_argument("--split", help="split to render (default: train, or the eval split)")
    parser.add_argument("-n", "--count", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval", action="store_true", help="evaluation formatting (template 0)")
    parser.add_argument("--template", type=int, help="force one instruction paraphrase")
    parser.add_argument("--chat", metavar="MODEL", help="render with MODEL's chat template")
    parser.add_argument("--tokens", metavar="MODEL", help="the ids and label mask for MODEL")
    parser.add_argument("--max-length", type=int, default=512, help="--tokens: batch.max_length")
    add_dataset_option_argument(parser)
    add_import_argument(parser)
    args = parser.parse_args(argv)
    options = parse_dataset_options(args.options)
    if options and args.shards is not None:
        raise GeneralistError("--option is for --source (shards were written with theirs)")
    load_catalog(args.imports)
    task = TASKS.get(args.task)
    train = not args.eval and task.train_split is not None
    split = args.split or (task.train_split if train else task.eval_split)

    def records(which: str) -> Iterator[Record]:
        if args.shards is not None:
            return read_records(args.shards, task.dataset, which)
        return source_records(task, args.source, which, options)

    examples = render_examples(
        task, records(split), records("train"), args.count, args.seed, train, args.template
    )
    chat = chat_format(args.chat) if args.chat else None
    collator = None
    if args.tokens:
        collator = Collator(weightless_bundle(args.tokens, chat is not None), args.max_length)
    for example in examples:
        print(
            f"===== {task.name} / {example.id} (template {example.template_index}, "
            f"{len(example.images)} image(s), exemplars {list(example.exemplar_ids)}) ====="
        )
        if chat is not None:
            print(chat.prompt_text(example), end="")
            print(f"[LABELS: {chat.completion_text(example, example.target)}]\n")
        else:
            print(example.prompt, end="")
            print(f" [TARGET: {example.target}]\n")
        if collator is not None:
            print("\n".join(token_lines(collator, example)) + "\n")
    if not examples:
        print(f"no records in split {split!r} of dataset {task.dataset!r}")
    return 0
