"""Building tiny models offline: forward/backward, the trainable set, config errors."""

from __future__ import annotations

import pytest
import torch

from generalist.batching.collate import Collator
from generalist.batching.model_inputs import model_inputs
from generalist.errors import ConfigError
from generalist.model.build import build_model
from generalist.model.config import LoraSettings, ModelConfig
from generalist.model.lora import trainable_parameter_names


def test_tiny_forward_backward_reaches_lora_and_projector(make_bundle, h):
    bundle = make_bundle()
    batch = Collator(bundle, 64)([h.image_example(), h.text_example()])
    loss = bundle.model(**model_inputs(batch)).loss
    assert torch.isfinite(loss)
    loss.backward()
    grads = {n: p.grad for n, p in bundle.model.named_parameters() if p.requires_grad}
    # lora_B gets a gradient at once (B starts at zero, so A's grad is zero at step 0)
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "lora_B" in n)
    assert any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "projector" in n)


def test_lora_trainable_set_vision_frozen_projector_trained(make_bundle):
    names = trainable_parameter_names(make_bundle(lora={"r": 4}).model)
    assert names, "nothing trains"
    assert not [n for n in names if "vision_tower" in n]
    lora = [n for n in names if "lora_" in n]
    assert lora and all("language_model" in n for n in lora)
    # default targets: q,k,v,o of each of the 2 text layers, A and B each
    assert len(lora) == 2 * 4 * 2
    assert {n.split(".")[-4] for n in lora if "lora_A" in n} == {
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
    }
    projector = [n for n in names if "multi_modal_projector" in n]
    assert len(projector) == 4  # linear_1/2 weight and bias
    assert set(names) == set(lora) | set(projector)


def test_full_training_and_projector_only(make_bundle):
    full = trainable_parameter_names(make_bundle(lora={"enabled": False}).model)
    assert not [n for n in full if "vision_tower" in n]
    assert [n for n in full if "language_model" in n] and "lm_head.weight" in full
    stage1 = make_bundle(lora={"enabled": False}, freeze_language_model=True)
    names = trainable_parameter_names(stage1.model)
    assert names and all("multi_modal_projector" in n for n in names)
    unfrozen = trainable_parameter_names(make_bundle(freeze_vision=False).model)
    assert [n for n in unfrozen if "vision_tower" in n]


def test_same_seed_same_weights_and_image_token_expansion(make_bundle):
    a, b = make_bundle(), make_bundle()
    for (n, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert torch.equal(p, q), n  # LoRA A too: peft draws it from a seeded generator
    # image_size 32 / patch 16 -> 4 patches; the CLS token is dropped ("default" strategy)
    out = a.processor(text="<image>", images=[__import__("PIL.Image").Image.new("RGB", (9, 9))])
    assert out["input_ids"][0].count(a.image_token_id) == 4


def test_unknown_key_names_the_key():
    with pytest.raises(ConfigError, match=r"unknown key 'model\.tiny\.hiden_size'"):
        ModelConfig.parse({"tiny": {"hiden_size": 3}})
    with pytest.raises(ConfigError, match=r"unknown key 'lora\.rank'.*known: .*\br\b"):
        LoraSettings.parse({"rank": 8})
    with pytest.raises(ConfigError, match=r"lora\.dropout"):
        LoraSettings.parse({"dropout": 1.5})


def test_bad_model_choices_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"exactly one of model\.name_or_path or model\.tiny"):
        ModelConfig.parse({})
    with pytest.raises(ConfigError, match="exactly one"):
        ModelConfig.parse({"name_or_path": "x", "tiny": {}})
    with pytest.raises(ConfigError, match="composed"):
        ModelConfig.parse({"family": "composed", "vision_encoder": "v"})
    with pytest.raises(ConfigError, match="hidden_size 30 is not divisible by heads"):
        ModelConfig.parse({"tiny": {"hidden_size": 30, "heads": 4}})
    cfg = ModelConfig.parse({"name_or_path": str(tmp_path / "nowhere")})
    with pytest.raises(ConfigError, match=r"model\.name_or_path: cannot load"):
        build_model(cfg)
    cfg = ModelConfig.parse({"tiny": {"tokenizer_corpus": str(tmp_path / "none.txt")}})
    with pytest.raises(ConfigError, match="tokenizer_corpus"):
        build_model(cfg)


def test_unknown_lora_target_is_config_error(make_bundle):
    with pytest.raises(ConfigError, match=r"set lora\.enabled: false"):
        make_bundle(freeze_language_model=True)
    with pytest.raises(ConfigError, match=r"lora\.target_modules"):
        make_bundle(lora={"target_modules": ["no_such_proj"]})


def test_gradient_checkpointing_gives_the_same_gradients(make_bundle, h):
    grads = []
    for ckpt in (False, True):
        bundle = make_bundle(lora={"dropout": 0.0}, gradient_checkpointing=ckpt)
        base = bundle.base_model
        flag = getattr(base, "is_activation_checkpointing", None)
        assert (flag if flag is not None else base.is_gradient_checkpointing) == ckpt
        bundle.model.train()
        batch = Collator(bundle, 64)([h.image_example(), h.text_example()])
        bundle.model(**model_inputs(batch)).loss.backward()
        grads.append({n: p.grad for n, p in bundle.model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, g in grads[0].items():
        torch.testing.assert_close(g, grads[1][name], atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize("architecture", ["llava", "blip2"])
def test_saved_processor_is_reused_and_encodes_the_same(h, tmp_path, architecture):
    cfg = ModelConfig.parse(
        {"tiny": {"hidden_size": 32, "heads": 2, "image_size": 32, "architecture": architecture}}
    )
    first = build_model(cfg, texts_for_tokenizer=h.corpus, work_dir=tmp_path)
    assert (tmp_path / "processor").is_dir()
    # the other ranks and a resumed run: no texts needed, the saved tokenizer is reused
    again = build_model(cfg, texts_for_tokenizer=None, work_dir=tmp_path)
    examples = [h.image_example(), h.text_example()]
    a, b = Collator(first, 64)(examples), Collator(again, 64)(examples)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
    assert torch.equal(a["pixel_values"], b["pixel_values"])
    assert again.image_token == first.image_token == "<image>"
