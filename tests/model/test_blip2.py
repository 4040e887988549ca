"""The tiny BLIP-2 (Q-Former + T5 encoder-decoder): labels, dummy images, LoRA, export."""

from __future__ import annotations

import pytest
import torch

from generalist.batching.collate import Collator
from generalist.batching.model_inputs import model_inputs
from generalist.batching.padding import IGNORE_INDEX
from generalist.errors import DataError
from generalist.model.export import export
from generalist.model.lora import trainable_parameter_names
from generalist.model.model_dir import save_model_dir

QUERIES = 4


@pytest.fixture
def blip2(make_bundle):
    b = make_bundle(tiny={"architecture": "blip2", "num_query_tokens": QUERIES})
    b.model.eval()
    return b


def test_blip2_batch_labels_are_the_decoder_target(blip2, h):
    assert blip2.family == "blip2" and blip2.is_encoder_decoder
    batch = Collator(blip2, 64)([h.image_example(color="blue"), h.text_example(answer="no")])
    tok = blip2.tokenizer
    # the encoder input starts with the query tokens; the text-only row has a masked dummy
    row0 = batch["input_ids"][0].tolist()
    assert row0[:QUERIES] == [blip2.image_token_id] * QUERIES
    assert (batch["input_ids"] == blip2.image_token_id).sum().item() == 2 * QUERIES
    assert batch["pixel_values"].shape[0] == 2
    txt_mask = batch["attention_mask"][1]
    assert txt_mask[batch["input_ids"][1] == blip2.image_token_id].sum().item() == 0
    blue = [*tok(" blue", add_special_tokens=False)["input_ids"], tok.eos_token_id]
    no = [*tok(" no", add_special_tokens=False)["input_ids"], tok.eos_token_id]
    assert batch["labels"].tolist() == [blue, no]  # same length here: no label padding
    out = blip2.model(**model_inputs(batch))
    assert out.logits.shape[:2] == batch["labels"].shape and torch.isfinite(out.loss)
    out.loss.backward()
    names = trainable_parameter_names(blip2.model)
    lora = {n.split(".")[-4] for n in names if "lora_A" in n}
    assert lora == {"q", "k", "v", "o"} and all(
        "language_model" in n for n in names if "lora_" in n
    )
    assert [n for n in names if "language_projection" in n]
    assert [n for n in names if "qformer" in n]  # the projector part: Q-Former + projection
    assert not [n for n in names if "vision_model" in n]
    with pytest.raises(DataError, match="BLIP-2 takes one image per example"):
        ex = h.image_example()
        Collator(blip2, 64)(
            [
                ex.__class__(
                    **{**ex.__dict__, "prompt": "<image> <image> Q:", "images": ex.images * 2}
                )
            ]
        )


def test_blip2_labels_pad_with_ignore_index(blip2, h):
    long = h.image_example()
    long = long.__class__(**{**long.__dict__, "target": "red blue green"})
    batch = Collator(blip2, 64)([long, h.text_example()])
    assert batch["labels"].shape[1] == 4 and batch["labels"][1, 2:].tolist() == [IGNORE_INDEX] * 2


def test_blip2_export_generates_the_same(blip2, h, tmp_path):
    for n, p in blip2.model.named_parameters():
        if "lora_B" in n:
            p.data.normal_(0, 0.5, generator=torch.Generator().manual_seed(0))
    save_model_dir(blip2, tmp_path / "ckpt" / "model")
    out = export(tmp_path / "ckpt", tmp_path / "out")
    from transformers import AutoModelForImageTextToText

    plain = AutoModelForImageTextToText.from_pretrained(out).eval()
    gen = Collator(blip2, 64, for_generation=True)([h.image_example()])
    kw = {"max_new_tokens": 5, "min_new_tokens": 5, "do_sample": False}
    with torch.no_grad():
        a = plain.generate(**model_inputs(gen), **kw)
        b = blip2.model.generate(**model_inputs(gen), **kw)
    assert a.tolist() == b.tolist() and a.shape[1] == 6  # decoder start + 5 new tokens
