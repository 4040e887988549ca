"""prompt_format chat: Examples rendered with the model's real chat template (stored fixtures,
tests/support/chat_templates), pinned token for token against transformers' own
apply_chat_template; labels on the assistant turn through its end-of-turn token only."""

from __future__ import annotations

import io
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image

from generalist.batching.chat import ChatFormat
from generalist.batching.collate import Collator
from generalist.batching.padding import IGNORE_INDEX
from generalist.catalog.records import ChatTurns, Example
from generalist.errors import ConfigError, DataError
from generalist.eval.generation import HFPredictor
from generalist.model.build import build_model
from generalist.model.config import LoraSettings, ModelConfig
from generalist.model.model_dir import load_model_dir, save_model_dir

from support import chat_templates as templates
from support import tiny_paligemma_qwen2_vl as tiny

HERE = Path(__file__).parent


INSTRUCTION = "answer the question about the image."


def chat_example(h, color="red", shots=True, question="what color is the shape?"):
    turns = ChatTurns(
        INSTRUCTION,
        (("Q: what shape is it?", "circle"),) if shots else (),
        f"Given <image>. Q: {question}",
    )
    return Example(
        task="vqa", id=f"chat-{color}", prompt="", target=color, images=(h.png(color),), turns=turns
    )


def with_pixels(messages, example):
    """The messages with each image item holding its PIL image (what apply_chat_template loads)."""
    images = iter(Image.open(io.BytesIO(b)) for b in example.images)
    for m in messages:
        for item in m["content"] if isinstance(m["content"], list) else []:
            if item["type"] == "image":
                item["image"] = next(images)
    return messages


def labelled(enc):
    return [t for t, lab in zip(enc.input_ids, enc.labels) if lab != IGNORE_INDEX]


@pytest.fixture
def llava_chat(make_bundle):
    bundle = make_bundle(prompt_format="chat")
    text = templates.chat_template("llava")
    bundle.processor.chat_template = bundle.tokenizer.chat_template = text
    return bundle


def test_llava_chat_prompt_and_labels_equal_the_processors_chat_rendering(llava_chat, h):
    collator = Collator(llava_chat, max_length=256)
    example = chat_example(h)
    enc = collator.encode(example)
    messages = with_pixels(collator.chat.messages(example), example)
    own = llava_chat.processor.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=True, return_dict=True
    )
    answered = [*messages, {"role": "assistant", "content": [{"type": "text", "text": "red"}]}]
    full = llava_chat.processor.apply_chat_template(answered, tokenize=True, return_dict=True)
    assert enc.input_ids[: enc.prompt_length] == list(own["input_ids"][0])
    # LLaVA-1.5's template ends no turn: the labels are the answer's tokens and eos
    assert enc.input_ids[:-1] == list(full["input_ids"][0])
    red = collator.tokenizer(" red", add_special_tokens=False)["input_ids"]
    assert labelled(enc) == [*red, collator.eos_id]
    assert collator.chat.system_role and collator.chat.end_text is None
    text = collator.chat.prompt_text(example)
    assert text == (
        f"{INSTRUCTION} USER: Q: what shape is it? ASSISTANT: circle "
        "USER: <image>\nGiven  . Q: what color is the shape? ASSISTANT:"
    )


def test_a_chat_prompt_too_long_drops_exemplar_turns_before_any_cut(llava_chat, h):
    example, bare = chat_example(h), chat_example(h, shots=False)
    whole = Collator(llava_chat, max_length=256).encode(example)
    short = Collator(llava_chat, max_length=256).encode(bare)
    assert len(whole.input_ids) > len(short.input_ids)
    fitted = Collator(llava_chat, max_length=len(short.input_ids)).encode(example)
    assert fitted.input_ids == short.input_ids and fitted.labels == short.labels


def test_chat_evaluation_reports_the_fed_prompt_and_scores_options_from_one_prompt(llava_chat, h):
    example = replace(chat_example(h), options=("red", "blue", "green circle"))
    predictor = HFPredictor(llava_chat, max_length=256)
    assert predictor.prompt_format == "chat"
    fed = predictor.fed_prompt(example)
    assert fed == predictor.gen_collator.chat.prompt_text(example) and fed != example.prompt
    assert HFPredictor(llava_chat, max_length=256, prompt_format="raw").prompt_format == "raw"
    naive = HFPredictor(llava_chat, max_length=256, naive=True).score_options([example])
    cached = predictor.score_options([example])
    assert torch.allclose(torch.tensor(cached), torch.tensor(naive), atol=1e-5, rtol=1e-6)


def test_a_model_without_a_chat_template_is_a_config_error(make_bundle):
    bundle = make_bundle(prompt_format="chat")
    with pytest.raises(ConfigError, match=r"model\.prompt_format.*no chat template"):
        Collator(bundle, max_length=64)
    Collator(bundle, max_length=64, prompt_format="raw")  # raw needs none


def test_paligemma_has_no_chat_template_so_chat_is_a_config_error(tmp_path, h):
    path = tiny.save_tiny_paligemma(tmp_path / "paligemma", h.corpus)
    cfg = ModelConfig.parse({"name_or_path": str(path), "prompt_format": "chat"})
    bundle = build_model(cfg, LoraSettings.parse({"r": 2}))
    with pytest.raises(ConfigError, match=r"'model\.prompt_format' is 'chat'.*prompt_format: raw"):
        Collator(bundle, max_length=64)
    with pytest.raises(ConfigError, match="no chat template"):
        HFPredictor(bundle, max_length=64)  # evaluation refuses it the same way


def test_system_role_is_detected_not_hardcoded(llava_chat, h):
    chat = ChatFormat(llava_chat)
    gemma = templates.chat_template("gemma3")  # folds the system turn into the first user turn
    llava_chat.processor.chat_template = gemma
    folded = ChatFormat(llava_chat)
    assert folded.system_role
    text = folded.prompt_text(chat_example(h, shots=False))
    assert text == (
        f"<s><start_of_turn>user\n{INSTRUCTION}\n\nGiven<start_of_image>. Q: what color is the "
        "shape?<end_of_turn>\n<start_of_turn>model\n"
    )
    assert folded.renders_bos and chat.renders_bos is False
    refuses = "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no') }}"
    refuses += "{% endif %}[{{ m['role'] }}]{% for c in m['content'] %}{{ c.get('text', '') }}"
    refuses += "{% endfor %}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
    llava_chat.processor.chat_template = refuses
    plain = ChatFormat(llava_chat)
    assert not plain.system_role
    text = plain.prompt_text(chat_example(h, shots=False))
    assert text == f"[user]{INSTRUCTION}\nGiven . Q: what color is the shape?[assistant]"


def test_a_template_that_drops_the_answer_is_a_data_error_naming_the_example(llava_chat, h):
    text = "{% for m in messages %}{% if m['role'] == 'assistant' %}assistant:{% else %}"
    text += "{{ m['role'] }}: {% for c in m['content'] %}{{ c.get('text', '<image>') }}"
    text += (
        "{% endfor %}\n{% endif %}{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
    )
    llava_chat.processor.chat_template = text
    collator = Collator(llava_chat, max_length=256)
    with pytest.raises(DataError, match=r"example 'chat-red'.*does not write the target"):
        collator.encode(chat_example(h))


@pytest.fixture
def qwen_chat_dir(tmp_path, h):
    corpus = [*h.corpus, "You are a helpful assistant. system user assistant"]
    return templates.attach_chat_template(
        tiny.save_tiny_qwen2_vl(tmp_path / "q", corpus), "qwen2_vl"
    )


def _qwen(path, **lora):
    cfg = ModelConfig.parse({"name_or_path": str(path), "prompt_format": "chat"})
    return build_model(cfg, LoraSettings.parse({"r": 4, "dropout": 0.0, **lora}))


def test_qwen2_vl_chat_rendering_labels_and_stop_token(qwen_chat_dir, h):
    bundle = _qwen(qwen_chat_dir)
    collator = Collator(bundle, max_length=512)
    tok = bundle.tokenizer
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert collator.chat.end_text == "<|im_end|>" and im_end in collator.stop_ids()
    example = chat_example(h)
    assert collator.chat.prompt_text(example) == (
        f"<|im_start|>system\n{INSTRUCTION}<|im_end|>\n<|im_start|>user\nQ: what shape is it?"
        "<|im_end|>\n<|im_start|>assistant\ncircle<|im_end|>\n<|im_start|>user\nGiven "
        "<|vision_start|><|image_pad|><|vision_end|>. Q: what color is the shape?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    enc = collator.encode(example)
    assert tok.decode(labelled(enc)) == "red<|im_end|>"
    assert enc.input_ids.count(tok.convert_tokens_to_ids("<|image_pad|>")) > 1  # expanded
    # a text-only example, token for token against the tokenizer's own apply_chat_template
    text_only = Example("txt", "t1", "", "yes", turns=ChatTurns(INSTRUCTION, (), "Q: is it?"))
    enc = collator.encode(text_only)
    messages = collator.chat.messages(text_only)
    answered = [*messages, {"role": "assistant", "content": [{"type": "text", "text": "yes"}]}]
    own = tok.apply_chat_template(answered, tokenize=True, return_dict=False)
    own = own["input_ids"] if isinstance(own, dict) else own
    assert enc.input_ids == list(own)[:-1]  # the template's last "\n" after <|im_end|> unlabelled
    assert tok.decode(labelled(enc)) == "yes<|im_end|>"


def test_qwen2_vl_learns_and_generates_in_chat_format_and_the_model_dir_keeps_it(
    qwen_chat_dir, h, tmp_path
):
    linear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    bundle = _qwen(qwen_chat_dir, target_modules=linear)
    other = "is there a circle in the image?"  # the images differ in color only
    examples = [chat_example(h, "red", False), chat_example(h, "blue", False, question=other)]
    batch = Collator(bundle, max_length=512)(examples)
    losses = h.train(bundle, batch, steps=30, lr=1e-2)
    assert losses[-1] < 0.1 * losses[0], losses
    predictor = HFPredictor(bundle, max_length=512, max_new_tokens=4)
    assert predictor.generate(examples) == ["red", "blue"]
    scores = predictor.score_options([replace(examples[1], options=("red", "blue"))])
    assert scores[0][1] > scores[0][0]
    save_model_dir(bundle, tmp_path / "saved")
    loaded = load_model_dir(tmp_path / "saved")
    assert loaded.config.prompt_format == "chat"
    again = HFPredictor(loaded, max_length=512, max_new_tokens=4)
    assert again.gen_collator.chat is not None  # evaluation defaults to the trained format
    assert HFPredictor(loaded, max_length=512, prompt_format="raw").gen_collator.chat is None
    assert again.generate(examples) == ["red", "blue"]


END_OF_TURN = {  # what each stored template writes after an assistant turn (None: nothing)
    "gemma3": ("<end_of_turn>", "red<end_of_turn>"),
    "qwen2_vl": ("<|im_end|>", "red<|im_end|>"),
    "llava": (None, " red"),
    "llava_next": (None, " red"),  # its "<\\s>" is no token: eos ends the labels
    "llava_onevision": ("<|im_end|>", "red<|im_end|>"),
    "smolvlm": ("<end_of_utterance>", " red<end_of_utterance>"),
    "mllama": ("<|eot_id|>", "red<|eot_id|>"),
}


@pytest.mark.parametrize("family", sorted(END_OF_TURN))
def test_every_stored_template_gives_its_end_of_turn_and_completion(family, make_bundle, h):
    """Each family's published template through ChatFormat: the system turn reaches the text,
    the labelled completion is the answer and the template's own end-of-turn token, and the
    generation prompt is a prefix of the answered conversation."""
    import types

    bundle = make_bundle()
    tok = bundle.tokenizer
    specials = ["<end_of_turn>", "<start_of_turn>", "<|im_end|>", "<|im_start|>"]
    specials += ["<end_of_utterance>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template = templates.chat_template(family)
    fake = types.SimpleNamespace(processor=tok, tokenizer=tok, family="image_text_to_text")
    chat = ChatFormat(fake)
    end, completion = END_OF_TURN[family]
    assert chat.end_text == end and chat.system_role
    example = chat_example(h)
    assert chat.completion_text(example, "red") == completion
    assert INSTRUCTION in chat.prompt_text(example)
    ids = chat.target_ids(example, "red")
    assert ids[-1] == (tok.convert_tokens_to_ids(end) if end else tok.eos_token_id)


def test_render_cli_shows_the_chat_rendering(qwen_chat_dir, capsys):
    from generalist.cli import main

    assert (
        main(["render", "easy_vqa_shape", "-n", "1", "--eval", "--chat", str(qwen_chat_dir)]) == 0
    )
    out = capsys.readouterr().out
    assert "<|im_start|>system\nYou are a helpful assistant. Classify the shape" in out
    shot = "<|im_start|>user\nGiven <img>. Q: Which shape is in the image?\nOptions: (A) circle"
    assert shot in out  # the exemplar: an earlier user turn, its answer the assistant's
    assert re.search(r"<\|im_start\|>assistant\n(circle|rectangle|triangle)<\|im_end\|>", out)
    assert "<|vision_start|><|image_pad|><|vision_end|>. Q: Which shape" in out
    assert re.search(
        r"<\|im_start\|>assistant\n\[LABELS: (circle|rectangle|triangle)<\|im_end\|>\]", out
    )
