"""prompt_format chat on Idefics3, SmolVLM, LLaVA-NeXT and LLaVA-OneVision: the tiny checkpoints of
tiny_idefics3_smolvlm_llava_next.py given their published chat templates
(tests/support/chat_templates), the Collator's rendering and label mask pinned token for token
against the processor's own apply_chat_template (SmolVLM's and OneVision's videoless processors
included), then learning, generation (it stops at the template's end-of-turn token), option
scoring and export in that format."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from generalist.batching.collate import Collator
from generalist.batching.model_inputs import model_inputs
from generalist.batching.padding import IGNORE_INDEX
from generalist.catalog.records import ChatTurns, Example
from generalist.eval.generation import HFPredictor
from generalist.model.build import build_model
from generalist.model.config import LoraSettings, ModelConfig
from generalist.model.export import export
from generalist.model.model_dir import load_model_dir, save_model_dir

from support import chat_templates as templates
from support import tiny_idefics3_smolvlm_llava_next as tiny
from support.model_data import CORPUS

HERE = Path(__file__).parent


# Idefics3-8B-Llama3's template writes the same "User:/Assistant:" <end_of_utterance> turns as
# SmolVLM's, opened by "<|begin_of_text|>" instead of "<|im_start|>" (the rendering pinned in
# transformers' tests/models/idefics3/test_processing_idefics3.py; its verbatim text is not stored)
TEMPLATE = {f: f for f in tiny.FAMILIES} | {"idefics3": "smolvlm"}
END = {  # the labelled completion of the target "red" in each template
    "idefics3": " red<end_of_utterance>",
    "smolvlm": " red<end_of_utterance>",
    "llava_next": "red</s>",  # " red" (decode drops the lead space); no "<\\s>" token: eos
    "llava_onevision": "red<|im_end|>",
}
END_OF_TURN = {  # the special token ChatFormat finds after an assistant turn (None: eos ends it)
    "idefics3": "<end_of_utterance>",
    "smolvlm": "<end_of_utterance>",
    "llava_next": None,
    "llava_onevision": "<|im_end|>",
}
INSTRUCTION = "answer the question about the image."
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Each family's tiny checkpoint dir with its chat template, built once for this module."""
    corpus = CORPUS
    corpus = [*corpus, "User: Assistant: system user assistant [INST] [/INST]"]
    root = tmp_path_factory.mktemp("families_b_chat")
    return {
        name: templates.attach_chat_template(save(root / name, corpus), TEMPLATE[name])
        for name, save in tiny.SAVERS.items()
    }


def chat_bundle(path, **lora):
    cfg = ModelConfig.parse({"name_or_path": str(path), "prompt_format": "chat"})
    return build_model(cfg, LoraSettings.parse({"r": 4, "dropout": 0.0, **lora}))


def image_chat(color, size, shots=(), question="what color is the shape?"):
    turns = ChatTurns(INSTRUCTION, shots, f"Given <image>. Q: {question}")
    return Example("vqa", f"chat-{color}", "", color, images=(tiny.png(color, size),), turns=turns)


def text_chat(answer="yes"):
    return Example("txt", "t1", "", answer, turns=ChatTurns(INSTRUCTION, (), "Q: is it round?"))


def with_pixels(messages, example):
    """The messages with each image item holding its PIL image (what apply_chat_template loads)."""
    images = iter(Image.open(io.BytesIO(b)).convert("RGB") for b in example.images)
    for m in messages:
        for item in m["content"] if isinstance(m["content"], list) else []:
            if item["type"] == "image":
                item["image"] = next(images)
    return messages


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_chat_prompt_labels_and_pixels_are_the_processors_own(saved, family):
    bundle = chat_bundle(saved[family])
    collator = Collator(bundle, max_length=512)
    assert collator.chat is not None and collator.chat.end_text == END_OF_TURN[family]
    assert collator.chat.system_role  # the instruction is a system turn in all four
    tok, proc = bundle.tokenizer, bundle.processor
    assert proc.chat_template == templates.chat_template(TEMPLATE[family])
    shot = (("Q: what shape is it?", "circle"),)
    cases = [image_chat("red", (64, 32)), image_chat("red", (40, 40), shot), text_chat("red")]
    for example in cases:
        enc = collator.encode(example)
        batch = collator([example])
        messages = with_pixels(collator.chat.messages(example), example)
        own = proc.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        n = enc.prompt_length
        assert enc.input_ids[:n] == list(own["input_ids"][0]), example.id
        assert enc.labels[:n] == [IGNORE_INDEX] * n
        labelled = [t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX]
        assert enc.input_ids[n:] == labelled  # the labels: all that follows the prompt
        assert tok.decode(labelled) == END[family]
        assert labelled[-1] in collator.chat.stop_ids()
        if not example.images:
            continue
        assert batch["input_ids"][0, :n].tolist() == enc.input_ids[:n]
        want = own["pixel_values"]
        if family in tiny.TILED:
            assert torch.equal(batch["pixel_values"], torch.as_tensor(want))
            mask = torch.as_tensor(own["pixel_attention_mask"])
            assert torch.equal(batch["pixel_attention_mask"], mask)
        else:
            want = torch.as_tensor(want)
            assert torch.equal(batch["pixel_values"][:, : want.shape[1]], want)
            assert batch["image_sizes"].tolist() == torch.as_tensor(own["image_sizes"]).tolist()


@pytest.mark.parametrize("family", tiny.FAMILIES)
def test_chat_learns_generates_scores_exports_and_keeps_the_format(saved, h, tmp_path, family):
    bundle = chat_bundle(saved[family], target_modules=ALL_LINEAR)
    other = "is there a circle in the image?"
    examples = [
        image_chat("blue", (40, 40)),
        text_chat("no"),
        image_chat("red", (64, 32), (), other),
    ]
    batch = Collator(bundle, 512)(examples)
    losses = h.train(bundle, batch, steps=25, lr=2e-2)
    assert losses[-1] < 0.1 * losses[0], losses
    predictor = HFPredictor(bundle, max_length=512, max_new_tokens=4)
    assert predictor.gen_collator.chat is not None
    assert predictor.generate(examples) == ["blue", "no", "red"]
    scores = predictor.score_options([replace(examples[2], options=("blue", "red"))])
    assert scores[0][1] > scores[0][0]
    save_model_dir(bundle, tmp_path / "ckpt" / "model")
    assert load_model_dir(tmp_path / "ckpt" / "model").config.prompt_format == "chat"
    out = export(tmp_path / "ckpt", tmp_path / "out")
    from transformers import AutoModelForImageTextToText

    plain = AutoModelForImageTextToText.from_pretrained(out).eval()
    gen = Collator(bundle, 512, for_generation=True)(examples)
    kw = {"max_new_tokens": 4, "min_new_tokens": 4, "do_sample": False}
    with torch.no_grad():
        a = plain.generate(**model_inputs(gen), **kw)
        b = bundle.model.generate(**model_inputs(gen), **kw)
    assert a.tolist() == b.tolist()
    # unforced, the model writes each target and the template's end of turn: where it stops
    collator = Collator(bundle, 512)
    stops = collator.stop_ids()
    with torch.no_grad():
        c = bundle.model.generate(
            **model_inputs(gen), max_new_tokens=6, do_sample=False, eos_token_id=stops
        )
    width = gen["input_ids"].shape[1]
    for row, example in enumerate(examples):
        enc = collator.encode(example)
        want = enc.input_ids[enc.prompt_length :]  # the labelled target and end-of-turn token
        assert c[row, width : width + len(want)].tolist() == want, example.id
        assert want[-1] in stops
    assert chat_bundle(out).processor.chat_template == bundle.processor.chat_template
