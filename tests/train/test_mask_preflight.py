"""The token-mask preflight on a real tiny LLaVA and the tiny tasks' shards: every failure mode
(empty target, target truncated away, labels that do not decode back to the target) stops with
a DataError naming the task and example; good examples pass in both prompt formats."""

from __future__ import annotations

import dataclasses

import pytest

from generalist.batching.collate import Collator
from generalist.catalog.mixture import mixture_from_rates
from generalist.errors import DataError
from generalist.model.build import build_model
from generalist.model.config import LoraSettings, ModelConfig
from generalist.train.mask_preflight import check_example, check_token_masks, preflight_examples
from generalist.train.setup import tokenizer_texts

TINY = {"vision_layers": 1, "text_layers": 1, "hidden_size": 32, "heads": 2, "image_size": 32}
LLAVA_TEMPLATE = (  # llava-hf/llava-1.5-7b-hf (tests/support/chat_templates/llava.jinja)
    "{% for message in messages %}{% if message['role'] != 'system' %}{{ message['role'].upper()"
    " + ': '}}{% endif %}{% for content in message['content'] | selectattr('type', 'equalto', "
    "'image') %}{{ '<image>\n' }}{% endfor %}{% for content in message['content'] | "
    "selectattr('type', 'equalto', 'text') %}{{ content['text'] + ' '}}{% endfor %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


@pytest.fixture(scope="module")
def setup(shard_root):
    mixture = mixture_from_rates("inline", {"train_colors": 1.0, "train_words": 1.0})
    texts = [*tokenizer_texts(mixture, shard_root), "USER: ASSISTANT: Answer:"]
    cfg = ModelConfig.parse({"tiny": {**TINY, "patch_size": 16, "vocab_size": 300}})
    bundle = build_model(cfg, LoraSettings.parse({"enabled": False}), texts_for_tokenizer=texts)
    bundle.processor.chat_template = LLAVA_TEMPLATE
    return bundle, mixture, shard_root


def test_good_examples_pass_in_both_formats(setup):
    bundle, mixture, shards = setup
    for fmt in ("raw", "chat"):
        collator = Collator(bundle, max_length=128, prompt_format=fmt)
        assert check_token_masks(collator, mixture, shards, per_task=4) == 8


def test_an_empty_target_names_task_and_example(setup):
    bundle, mixture, shards = setup
    example = preflight_examples(mixture, shards, per_task=1)[0]
    empty = dataclasses.replace(example, target=" ")
    with pytest.raises(DataError, match=f"task 'train_colors' example '{example.id}'.*empty"):
        check_example(Collator(bundle, max_length=128), empty)


def test_a_target_truncated_away_names_task_and_example(setup):
    bundle, mixture, shards = setup
    example = preflight_examples(mixture, shards, per_task=1)[0]
    long = dataclasses.replace(example, target=" ".join(["red"] * 40))
    with pytest.raises(DataError, match=f"preflight: task 'train_colors' example '{example.id}'"):
        check_example(Collator(bundle, max_length=32), long)


def test_labels_that_do_not_decode_to_the_target_name_task_and_example(setup):
    bundle, mixture, shards = setup
    example = preflight_examples(mixture, shards, per_task=1)[0]
    unknown = dataclasses.replace(example, target="zebra")  # not in the word vocabulary: <unk>
    with pytest.raises(DataError, match=r"example '.*': the label tokens decode to ''"):
        check_example(Collator(bundle, max_length=128), unknown)
    # a template that writes more than the target into the assistant turn
    bundle.processor.chat_template = LLAVA_TEMPLATE.replace(
        "content['text'] + ' '",
        "('Answer: ' if message['role'] == 'assistant' else '') + content['text'] + ' '",
    )
    try:
        chat = Collator(bundle, max_length=128, prompt_format="chat")
        with pytest.raises(DataError, match=r"decode to 'answer : red', not the target 'red'"):
            check_example(chat, dataclasses.replace(example, target="red"))
    finally:
        bundle.processor.chat_template = LLAVA_TEMPLATE
