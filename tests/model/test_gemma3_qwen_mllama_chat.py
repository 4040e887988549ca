"""prompt_format chat on Gemma 3 (MedGemma), Qwen2.5-VL, Qwen3-VL and Mllama (Llama 3.2 Vision):
the tiny checkpoints of tiny_gemma3_qwen_mllama.py with each family's published chat template
(tests/support/chat_templates). Our prompt tokens, label mask and per-token ids equal the model's
own processor's apply_chat_template token for token; LoRA learns in the chat format, greedy
generation stops at the template's end-of-turn token, option scoring works, and the export
reloads with plain transformers to the same tokens, its model dir keeping prompt_format chat."""

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
from support import tiny_gemma3_qwen_mllama as tiny

HERE = Path(__file__).parent


FAMILIES = ["gemma3", "qwen2_5_vl", "qwen3_vl", "mllama"]
# the stored template each family's instruct checkpoints ship (Qwen2.5-VL: Qwen2-VL's text)
TEMPLATE = {
    "gemma3": "gemma3",
    "qwen2_5_vl": "qwen2_vl",
    "qwen3_vl": "qwen3_vl",
    "mllama": "mllama",
}
END_OF_TURN = {
    "gemma3": "<end_of_turn>",
    "qwen2_5_vl": "<|im_end|>",
    "qwen3_vl": "<|im_end|>",
    "mllama": "<|eot_id|>",
}
# LoRA's learning rate in the learning test (25 steps on one batch). Qwen2.5-VL at 3e-2 (with
# transformers 5.25's tiny random model) overshoots: its loss jumps back from 0.18 to 3.4 at step
# 14 and the 25th step lands where the red and blue images score alike ("blue" for both), though
# its batch equals the model's own processor and get_rope_index row for row. At 1e-2 its loss falls
# monotonically (0.047 at step 25) with a clear margin for each answer. Gemma 3 (tied frozen LM
# head) needs 3e-2 to learn in 25 steps (at 1e-2 its loss is still 2.0).
LEARNING_RATE = {"qwen2_5_vl": 1e-2}
TYPES = {"gemma3": "token_type_ids", "mllama": "cross_attention_mask"}  # else mm_token_type_ids
REAL_PROCESSORS = {"qwen2_5_vl": "Qwen2_5_VLProcessor", "qwen3_vl": "Qwen3VLProcessor"}
ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
INSTRUCTION = "answer the question about the image."
ROLE_WORDS = "You are a helpful assistant. system user assistant model"  # template text


def chat_dir(family, root, corpus):
    """A tiny checkpoint of `family` saved with its published chat template."""
    corpus = [*corpus, ROLE_WORDS]
    if family == "gemma3":
        path = tiny.save_tiny_gemma3(root, corpus)
    elif family == "mllama":
        path = tiny.save_tiny_mllama(root, corpus)
    else:
        path = tiny.save_tiny_qwen_vl(root, corpus, family)
    return templates.attach_chat_template(path, TEMPLATE[family])


def _bundle(path, **lora):
    cfg = ModelConfig.parse({"name_or_path": str(path), "prompt_format": "chat"})
    return build_model(cfg, LoraSettings.parse({"r": 4, "dropout": 0.0, **lora}))


def own_processor(family, bundle, monkeypatch):
    """The model's own processor with the checkpoint's template (Qwen's real processor class,
    built without the video processor that needs torchvision; nothing of it is used here)."""
    if family not in REAL_PROCESSORS:
        return bundle.processor
    import transformers
    from transformers.processing_utils import ProcessorMixin

    check = ProcessorMixin.check_argument_for_proper_class
    monkeypatch.setattr(
        ProcessorMixin,
        "check_argument_for_proper_class",
        lambda self, name, arg: None if arg is None else check(self, name, arg),
    )
    return getattr(transformers, REAL_PROCESSORS[family])(
        image_processor=bundle.processor.image_processor,
        tokenizer=bundle.tokenizer,
        video_processor=None,
        chat_template=templates.chat_template(TEMPLATE[family]),
    )


def image_chat(h, color="red", shots=True, question="what color is the shape?", n=0, size=40):
    shot = (("Q: what shape is it?", "circle"),) if shots else ()
    turns = ChatTurns(INSTRUCTION, shot, f"Given <image>. Q: {question}")
    images = (h.png(color, size=size),)
    return Example("vqa", f"img{n}-{color}", "", color, images=images, turns=turns)


def text_chat(answer="yes", shots=False):
    shot = (("Q: is it a square?", "no"),) if shots else ()
    turns = ChatTurns("answer the question.", shot, "Q: is there a circle in the image?")
    return Example("text", f"txt-{answer}", "", answer, turns=turns)


def with_pixels(messages, example):
    """The messages with each image item holding its PIL image (what apply_chat_template reads)."""
    images = iter(Image.open(io.BytesIO(b)).convert("RGB") for b in example.images)
    for message in messages:
        for item in message["content"]:
            if item["type"] == "image":
                item["image"] = next(images)
    return messages


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_prompt_labels_and_token_types_equal_the_processors_rendering(
    family, tmp_path, h, monkeypatch
):
    bundle = _bundle(chat_dir(family, tmp_path / family, h.corpus))
    collator = Collator(bundle, 512)
    tok, end = bundle.tokenizer, END_OF_TURN[family]
    assert collator.chat.end_text == end and collator.chat.system_role
    end_id = tok.convert_tokens_to_ids(end)
    assert end_id in collator.stop_ids() and len(tok.tokenize(end)) == 1  # one special token
    own = own_processor(family, bundle, monkeypatch)
    bare = text_chat("no")  # no instruction: the template's own system turn, if it has one
    bare = replace(bare, id="bare", turns=replace(bare.turns, instruction=""))
    examples = [image_chat(h, "blue"), text_chat("no"), text_chat("yes", shots=True), bare]
    batch = collator(examples)
    types = TYPES.get(family, "mm_token_type_ids")
    for row, example in enumerate(examples):
        enc = collator.encode(example)
        messages = with_pixels(collator.chat.messages(example), example)
        want = own.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=True, return_dict=True
        )
        assert enc.input_ids[: enc.prompt_length] == list(want["input_ids"][0]), example.id
        answer = {"role": "assistant", "content": [{"type": "text", "text": example.target}]}
        full = own.apply_chat_template([*messages, answer], tokenize=True, return_dict=True)
        full_ids = list(full["input_ids"][0])
        n = len(enc.input_ids)  # the full rendering, through the end-of-turn token
        assert enc.input_ids == full_ids[:n] and full_ids[n - 1] == end_id, example.id
        assert tok.decode(full_ids[n:]).strip() == ""  # only the template's closing newline
        labelled = [t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX]
        assert tok.decode(labelled) == example.target + end
        assert enc.labels[: enc.prompt_length] == [IGNORE_INDEX] * enc.prompt_length
        assert batch["input_ids"][row, :n].tolist() == enc.input_ids
        assert types in full or not example.images  # image rows always carry them
        if types in full:  # the per-token ids of the whole answered rendering
            got = batch[types][row, :n].tolist()
            assert got == torch.as_tensor(full[types])[0, :n].tolist(), example.id
    n_img = len(collator.encode(examples[0]).input_ids)
    assert batch[types][0, :n_img].any()  # the image row's image tokens are marked
    assert examples[2].turns.shots and "no" in collator.chat.prompt_text(examples[2])
    # Qwen2.5-VL's template adds its default system line; Qwen3-VL's has none
    default = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user"
    assert collator.chat.prompt_text(bare).startswith(default) == (family == "qwen2_5_vl")


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_format_learns_generates_scores_exports_and_reloads(family, tmp_path, h):
    path = chat_dir(family, tmp_path / family, h.corpus)
    bundle = _bundle(path, target_modules=ALL_LINEAR)
    other = "is there a circle in the image?"  # the images differ in color only
    examples = [
        image_chat(h, "blue", shots=False, size=64),
        text_chat("no"),
        image_chat(h, "red", shots=False, question=other, n=1),
    ]
    batch = Collator(bundle, 256)(examples)
    losses = h.train(bundle, batch, steps=25, lr=LEARNING_RATE.get(family, 3e-2))
    assert losses[-1] < 0.1 * losses[0], losses
    predictor = HFPredictor(bundle, max_length=256, max_new_tokens=6)
    assert predictor.generate(examples) == ["blue", "no", "red"]
    # greedy decoding ends each answer with the end-of-turn token (then only padding)
    gen = predictor.gen_collator(examples)
    stop = predictor.gen_collator.stop_ids()
    kw = {"max_new_tokens": 6, "do_sample": False, "pad_token_id": bundle.tokenizer.pad_token_id}
    with torch.no_grad():
        out = bundle.model.generate(**model_inputs(gen), eos_token_id=stop, **kw)
    chat = predictor.gen_collator.chat
    for row, example in zip(out[:, gen["input_ids"].shape[1] :].tolist(), examples):
        want = chat.target_ids(example, example.target)  # the answer and <end-of-turn>
        assert row[: len(want)] == want and want[-1] == chat.end_id
        assert set(row[len(want) :]) <= {bundle.tokenizer.pad_token_id}
    scores = predictor.score_options([replace(examples[2], options=("blue", "red", "green"))])
    assert max(range(3), key=scores[0].__getitem__) == 1
    save_model_dir(bundle, tmp_path / "ckpt" / "model")
    assert load_model_dir(tmp_path / "ckpt" / "model").config.prompt_format == "chat"
    out_dir = export(tmp_path / "ckpt", tmp_path / "out")
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    plain = AutoModelForImageTextToText.from_pretrained(out_dir).eval()
    assert type(plain) is type(bundle.base_model)
    # the export renders as the checkpoint did: its template travels with it
    exported = AutoTokenizer.from_pretrained(out_dir)
    message = [{"role": "user", "content": [{"type": "text", "text": "Q: is it?"}]}]
    assert exported.apply_chat_template(message, tokenize=False) == chat.render(message, False)
    kw = {"max_new_tokens": 4, "min_new_tokens": 4, "do_sample": False}
    with torch.no_grad():
        a = plain.generate(**model_inputs(gen), **kw)
        b = bundle.model.generate(**model_inputs(gen), **kw)
    assert a.tolist() == b.tolist()
