"""Models by path: a saved LLaVA, a text-only causal LM, and a composed vision encoder + LM."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from generalist.batching.collate import Collator
from generalist.batching.model_inputs import model_inputs
from generalist.errors import DataError
from generalist.model.build import build_model
from generalist.model.config import LoraSettings, ModelConfig
from generalist.model.export import export
from generalist.model.lora import trainable_parameter_names
from generalist.model.model_dir import save_model_dir
from generalist.model.tiny_parts import train_tokenizer

TOK = SimpleNamespace(
    tokenizer="word", vocab_size=200, tokenizer_corpus=None, max_position_embeddings=128
)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """A tiny CLIP vision encoder and a tiny Llama causal LM saved as ordinary HF dirs."""
    from transformers import (
        CLIPImageProcessorPil,
        CLIPVisionConfig,
        CLIPVisionModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    root = tmp_path_factory.mktemp("parts")
    corpus = ["Q: is there a circle in the image? A: yes no", "what color red blue"]
    tok = train_tokenizer(TOK, corpus)
    torch.manual_seed(1)
    lm = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=len(tok),
            max_position_embeddings=128,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
            bos_token_id=tok.bos_token_id,
        )
    )
    lm.save_pretrained(root / "lm")
    tok.save_pretrained(root / "lm")
    vision = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=24,
            intermediate_size=48,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    )
    vision.save_pretrained(root / "vision")
    CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(root / "vision")
    return SimpleNamespace(root=root, lm=lm, vision=vision)


def test_causal_lm_by_path_trains_text_and_exports(parts, h, tmp_path):
    cfg = ModelConfig.parse({"name_or_path": str(parts.root / "lm")})
    bundle = build_model(cfg, LoraSettings.parse({"r": 2}))
    assert bundle.family == "causal_lm" and bundle.image_token is None
    names = trainable_parameter_names(bundle.model)
    assert names and all("lora_" in n for n in names)
    batch = Collator(bundle, 64)([h.text_example(), h.text_example(1, "no")])
    assert "pixel_values" not in batch
    bundle.model(**model_inputs(batch)).loss.backward()
    with pytest.raises(DataError, match="text-only causal LM"):
        Collator(bundle, 64)([h.image_example()])
    for n, p in bundle.model.named_parameters():
        if "lora_B" in n:
            p.data.fill_(0.1)  # as if trained
    save_model_dir(bundle, tmp_path / "ckpt" / "model")
    meta = json.loads((tmp_path / "ckpt" / "model" / "model.json").read_text())
    assert meta["base"] == "reference"  # an untrained pretrained base is not copied
    out = export(tmp_path / "ckpt", tmp_path / "out")
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(out).eval()
    bundle.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            plain(input_ids=batch["input_ids"]).logits,
            bundle.model(input_ids=batch["input_ids"]).logits,
            atol=1e-5,
            rtol=1e-5,
        )


def test_composed_model_keeps_pretrained_parts_and_trains_the_projector(parts, h):
    cfg = ModelConfig.parse(
        {
            "family": "composed",
            "vision_encoder": str(parts.root / "vision"),
            "language_model": str(parts.root / "lm"),
        }
    )
    bundle = build_model(cfg, LoraSettings.parse({"r": 2}))
    base = bundle.base_model
    for name, p in parts.vision.state_dict().items():
        assert torch.equal(base.model.vision_tower.state_dict()[name], p), name
    assert torch.equal(
        base.lm_head.weight[: parts.lm.lm_head.weight.shape[0]], parts.lm.lm_head.weight
    )
    names = trainable_parameter_names(bundle.model)
    assert [n for n in names if "multi_modal_projector" in n]
    assert not [n for n in names if "vision_tower" in n]
    batch = Collator(bundle, 128)([h.image_example(), h.text_example()])
    # 32 px / 8 px patches = 16 tokens per image (CLS dropped), real image and dummy
    assert (batch["input_ids"] == bundle.image_token_id).sum().item() == 2 * 16
    loss = bundle.model(**model_inputs(batch)).loss
    loss.backward()
    assert torch.isfinite(loss)


def test_composed_adds_the_image_token_to_a_plain_lm_tokenizer(parts, h, tmp_path):
    """A real LM's tokenizer has no "<image>": it is added, embeddings resized, round trip."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "<s>", "</s>", "q", ":", "is", "there", "a", "circle", "yes"]
    raw = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )  # no pad token either: eos is used
    lm = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=len(words),
            eos_token_id=3,
            bos_token_id=2,
        )
    )
    lm.save_pretrained(tmp_path / "lm")
    tok.save_pretrained(tmp_path / "lm")
    cfg = ModelConfig.parse(
        {
            "family": "composed",
            "vision_encoder": str(parts.root / "vision"),
            "language_model": str(tmp_path / "lm"),
        }
    )
    bundle = build_model(cfg, LoraSettings.parse({"r": 2}))
    assert bundle.image_token_id == len(words)  # appended after the LM's own vocabulary
    assert bundle.base_model.get_input_embeddings().weight.shape[0] == len(words) + 1
    batch = Collator(bundle, 64)([h.image_example(), h.text_example()])
    assert (batch["input_ids"] == bundle.image_token_id).sum().item() == 2 * 16
    for n, p in bundle.model.named_parameters():
        if "lora_B" in n:
            p.data.fill_(0.05)
    save_model_dir(bundle, tmp_path / "model")
    from generalist.model.model_dir import load_model_dir

    again = load_model_dir(tmp_path / "model")
    batch2 = Collator(again, 64)([h.image_example(), h.text_example()])
    assert torch.equal(batch["input_ids"], batch2["input_ids"])
    bundle.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            again.model(**model_inputs(batch2)).logits, bundle.model(**model_inputs(batch)).logits
        )


def test_model_dir_without_processor_says_so_before_loading_weights(
    make_bundle, tmp_path, monkeypatch
):
    """model.save_pretrained alone writes no processor: the error says what is missing and how
    to save it (not transformers' "give a local directory with a saved model"), and comes before
    the weights are loaded."""
    import generalist.model.pretrained as pretrained
    from generalist.errors import ConfigError

    make_bundle(lora={"enabled": False}).base_model.save_pretrained(tmp_path / "vlm")
    monkeypatch.setattr(pretrained, "load_auto_model", lambda *a: pytest.fail("weights loaded"))
    with pytest.raises(ConfigError) as err:
        pretrained.load_pretrained(ModelConfig.parse({"name_or_path": str(tmp_path / "vlm")}))
    message = str(err.value)
    assert message.startswith(f"model.name_or_path: '{tmp_path / 'vlm'}' holds a model but no ")
    assert "tokenizer_config.json and preprocessor_config.json not there" in message
    assert f"AutoProcessor.from_pretrained(BASE).save_pretrained('{tmp_path / 'vlm'}')" in message
    assert "give a local directory" not in message and "\n" not in message
    # a text-only LM saved without its tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        vocab_size=50,
    )
    LlamaForCausalLM(config).save_pretrained(tmp_path / "lm")
    with pytest.raises(ConfigError) as err:
        pretrained.load_pretrained(ModelConfig.parse({"name_or_path": str(tmp_path / "lm")}))
    assert "holds a model but no tokenizer (tokenizer_config.json not there" in str(err.value)
    assert "AutoTokenizer.from_pretrained(BASE).save_pretrained(" in str(err.value)
