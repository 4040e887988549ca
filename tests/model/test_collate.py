"""The collator: exact label masks, image token expansion, dummy images, truncation, grouping."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
import torch
from PIL import Image

from generalist.batching.collate import Collator
from generalist.batching.grouping import group_by_length
from generalist.batching.image_caps import decode_images
from generalist.batching.model_inputs import model_inputs
from generalist.batching.padding import IGNORE_INDEX
from generalist.errors import DataError


@pytest.fixture
def bundle(make_bundle):
    b = make_bundle()
    b.model.eval()
    return b


def test_labels_mask_prompt_and_padding_exactly(bundle, h):
    ex_img, ex_txt = h.image_example(color="blue"), h.text_example(answer="no")
    batch = Collator(bundle, 64, dummy_images="off", tasks=["text", "vqa"])([ex_img, ex_txt])
    tok = bundle.tokenizer
    img = Image.open(__import__("io").BytesIO(ex_img.images[0])).convert("RGB")
    prompt_ids = bundle.processor(text=ex_img.prompt, images=[img])["input_ids"][0]
    target_ids = [*tok(" blue", add_special_tokens=False)["input_ids"], tok.eos_token_id]
    assert len(target_ids) == 2
    row = batch["input_ids"][0].tolist()
    labels = batch["labels"][0].tolist()
    n = len(prompt_ids) + len(target_ids)
    assert row[:n] == prompt_ids + target_ids
    assert labels[:n] == [IGNORE_INDEX] * len(prompt_ids) + target_ids
    assert set(labels[n:]) <= {IGNORE_INDEX} and set(row[n:]) <= {tok.pad_token_id}
    assert tok.decode([t for t in labels if t != IGNORE_INDEX]) == "blue </s>"
    # the text-only row: every label but "no" + eos is masked, padding included
    txt_labels = [t for t in batch["labels"][1].tolist() if t != IGNORE_INDEX]
    assert txt_labels == [*tok(" no", add_special_tokens=False)["input_ids"], tok.eos_token_id]
    assert batch["attention_mask"].sum(1).tolist() == [
        n,
        len(batch["labels"][1]) - (batch["input_ids"][1] == tok.pad_token_id).sum().item(),
    ]
    assert batch["task_ids"].tolist() == [1, 0] and batch["task_names"] == ["vqa", "text"]


def test_image_token_expands_as_the_processor_says(bundle, h):
    two = replace(
        h.image_example(),
        prompt="Given <image> <image>. Q: what color is the shape?\nA:",
        images=(h.png("red"), h.png("blue")),
    )
    batch = Collator(bundle, 64)([two])
    per_image = (32 // 16) ** 2  # tiny image_size / patch_size, CLS dropped
    assert (batch["input_ids"] == bundle.image_token_id).sum().item() == 2 * per_image
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    with pytest.raises(DataError, match=r"example 'img0': the prompt has 2 <image> markers but 1"):
        Collator(bundle, 64)([replace(two, images=two.images[:1])])


def test_mixed_batch_has_pixel_values_for_every_row_and_dummy_is_invisible(bundle, h):
    mixed = Collator(bundle, 64)([h.image_example(), h.text_example(), h.text_example(1)])
    assert mixed["pixel_values"].shape[0] == 3  # one real image + two blank dummies
    assert (mixed["input_ids"] == bundle.image_token_id).sum().item() == 3 * 4
    alone = Collator(bundle, 64, dummy_images="off")([h.text_example()])
    assert "pixel_values" not in alone
    n = alone["input_ids"].shape[1]
    assert torch.equal(mixed["input_ids"][1, :n], alone["input_ids"][0])
    with torch.no_grad():
        a = bundle.model(**model_inputs(mixed)).logits[1, :n]
        b = bundle.model(**model_inputs(alone)).logits[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    per_batch = Collator(bundle, 64, dummy_images="per_batch")
    assert per_batch([h.text_example(), h.text_example(1)])["pixel_values"].shape[0] == 1
    assert per_batch([h.image_example(), h.text_example()])["pixel_values"].shape[0] == 1


def test_generation_mode_left_pads_prompt_only_and_dummy_does_not_change_output(bundle, h):
    gen = Collator(bundle, 64, for_generation=True)
    batch = gen([h.image_example(), h.text_example()])
    assert "labels" not in batch
    assert batch["attention_mask"][:, -1].tolist() == [1, 1]  # prompts end at the right edge
    img_only = Collator(bundle, 64, for_generation=True)([h.image_example()])
    assert torch.equal(batch["input_ids"][0], img_only["input_ids"][0])
    txt_only = Collator(bundle, 64, for_generation=True, dummy_images="off")([h.text_example()])
    kw = {"max_new_tokens": 4, "do_sample": False}
    with torch.no_grad():
        both = bundle.model.generate(**model_inputs(batch), **kw)[:, batch["input_ids"].shape[1] :]
        plain = bundle.model.generate(**model_inputs(txt_only), **kw)
    assert both[1].tolist() == plain[0, txt_only["input_ids"].shape[1] :].tolist()


def test_truncation_cuts_the_prompt_from_the_left_and_keeps_the_target(bundle, h):
    long = replace(
        h.text_example(),
        prompt="Instructions: answer the question. " * 6 + "Q: is there a circle?\nA:",
    )
    full = Collator(bundle, 200, dummy_images="off")([long])
    cut = Collator(bundle, 20, dummy_images="off")([long])
    assert cut["input_ids"].shape[1] == 20
    assert cut["input_ids"][0, 0].item() == bundle.tokenizer.bos_token_id
    assert torch.equal(cut["input_ids"][0, 1:], full["input_ids"][0, -19:])
    assert torch.equal(cut["labels"][0, -2:], full["labels"][0, -2:])
    with pytest.raises(DataError, match=r"exceed max_length 8 .*target \(\d+ tokens\) fit"):
        Collator(bundle, 8, dummy_images="off")([replace(long, target="yes " * 10)])
    with pytest.raises(DataError, match="would cut an image; raise max_length"):
        Collator(bundle, 10)([h.image_example()])


def test_length_grouping_keeps_padding_under_ten_percent(bundle, h):
    rng = random.Random(0)
    words = ["what", "color", "is", "the", "shape", "circle", "image", "answer"]
    examples = [
        replace(
            h.text_example(i),
            id=str(i),
            prompt=" ".join(rng.choice(words) for _ in range(rng.randint(2, 40))) + "\nA:",
        )
        for i in range(64)
    ]
    collator = Collator(bundle, 128, dummy_images="off")

    def padding_fraction(batch):
        mask = batch["attention_mask"]
        return float(1.0 - mask.sum().item() / mask.numel())

    naive = [padding_fraction(collator(examples[i : i + 8])) for i in range(0, 64, 8)]
    encoded = collator.encode_many(examples)  # one window of 8 micro-batches, as training cuts it
    batches = [collator.pad(g) for g in group_by_length(encoded, 8, lambda r: r.length)]
    grouped = [padding_fraction(b) for b in batches]
    assert sum(grouped) / len(grouped) < 0.10 < sum(naive) / len(naive)
    seen = [i for b in batches for i in b["example_ids"]]
    assert sorted(seen, key=int) == [str(i) for i in range(64)]
    assert group_by_length([5, 1, 4, 2], 2, lambda x: x) == [[4, 5], [1, 2]]


def test_batched_encoding_equals_one_by_one(bundle, h):
    examples = [h.image_example(0, "red"), h.text_example(1), h.image_example(2, "blue")]
    collator = Collator(bundle, 64)
    many = collator.encode_many(examples)
    for example, enc in zip(examples, many):
        text = collator._prompt_text(example)
        ids, images = collator._process_many([text], [decode_images(example)])[0]  # one call
        assert enc.input_ids[: len(ids)] == ids
        if example.images:
            torch.testing.assert_close(enc.images["pixel_values"], images["pixel_values"])
