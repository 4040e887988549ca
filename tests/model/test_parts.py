"""The three parts (vision tower, projector, language model) of every family, on tiny models
built from each transformers config class (no processor, no network): every part has weights,
and the default "LoRA on the language model, train the projector, freeze the tower" gives the
same picture everywhere."""

from __future__ import annotations

import pytest
import transformers as T

from generalist.errors import ConfigError
from generalist.model.config import LoraSettings, ModelConfig
from generalist.model.lora import apply_lora, configure_trainable, trainable_parameter_names
from generalist.model.parts import PARTS, part_of, parts_of

txt = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    vocab_size=300,
    head_dim=16,
)
sig = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=1,
    num_attention_heads=2,
    image_size=32,
    patch_size=16,
)
clip = dict(sig, projection_dim=32)


def qvis(**k):
    return dict(
        depth=1,
        hidden_size=32,
        num_heads=2,
        patch_size=8,
        spatial_merge_size=2,
        temporal_patch_size=2,
        **k,
    )


CONFIGS = {
    "llava": lambda: T.LlavaConfig(
        vision_config=T.CLIPVisionConfig(**clip),
        text_config=T.LlamaConfig(**txt),
        image_token_index=299,
    ),
    "llava_next": lambda: T.LlavaNextConfig(
        vision_config=T.CLIPVisionConfig(**clip),
        text_config=T.LlamaConfig(**txt),
        image_token_index=299,
    ),
    "llava_onevision": lambda: T.LlavaOnevisionConfig(
        vision_config=T.SiglipVisionConfig(**sig),
        text_config=T.Qwen2Config(**txt),
        image_token_index=299,
        video_token_index=298,
    ),
    "paligemma": lambda: T.PaliGemmaConfig(
        vision_config=T.SiglipVisionConfig(**sig),
        text_config=T.GemmaConfig(**txt),
        image_token_index=299,
        projection_dim=32,
        hidden_size=32,
    ),
    "gemma3": lambda: T.Gemma3Config(
        vision_config=T.SiglipVisionConfig(**sig),
        text_config=T.Gemma3TextConfig(**txt),
        mm_tokens_per_image=4,
        image_token_index=299,
    ),
    "blip-2": lambda: T.Blip2Config(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=16,
        ),
        qformer_config=dict(
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=64,
            encoder_hidden_size=32,
            vocab_size=300,
        ),
        text_config=T.OPTConfig(
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            vocab_size=300,
            word_embed_proj_dim=32,
        ).to_dict(),
        num_query_tokens=4,
    ),
    "qwen2_vl": lambda: T.Qwen2VLConfig(
        text_config=dict(txt, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
        vision_config=dict(qvis(embed_dim=32, mlp_ratio=2)),
    ),
    "qwen2_5_vl": lambda: T.Qwen2_5_VLConfig(
        text_config=dict(txt, rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
        vision_config=qvis(
            intermediate_size=64, out_hidden_size=32, fullatt_block_indexes=[0], window_size=16
        ),
    ),
    "qwen3_vl": lambda: T.Qwen3VLConfig(
        text_config=dict(
            txt,
            rope_scaling={
                "rope_type": "default",
                "mrope_section": [2, 3, 3],
                "mrope_interleaved": True,
            },
        ),
        vision_config=dict(
            depth=1,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            patch_size=8,
            spatial_merge_size=2,
            temporal_patch_size=2,
            out_hidden_size=32,
            num_position_embeddings=16,
            deepstack_visual_indexes=[0],
        ),
    ),
    "idefics3": lambda: T.Idefics3Config(
        vision_config=dict(sig), text_config=T.LlamaConfig(**txt).to_dict(), scale_factor=2
    ),
    "smolvlm": lambda: T.SmolVLMConfig(
        vision_config=dict(sig), text_config=T.LlamaConfig(**txt).to_dict(), scale_factor=2
    ),
    "mllama": lambda: T.MllamaConfig(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_global_layers=1,
            attention_heads=2,
            image_size=32,
            patch_size=16,
            vision_output_dim=64,
            intermediate_layers_indices=[0],
            max_num_tiles=4,
        ),
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=300,
            cross_attention_layers=[1],
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
    ),
}


def _model(name):
    import torch

    torch.manual_seed(0)
    return T.AutoModelForImageTextToText.from_config(CONFIGS[name]())


def _picture(model, **model_cfg):
    """{part: (trainable params, all params)} after our freezing and LoRA."""
    cfg = ModelConfig.parse({"name_or_path": "unused", **model_cfg})
    lora = LoraSettings.parse({"r": 2})
    configure_trainable(model, cfg, lora, "image_text_to_text")
    wrapped = apply_lora(model, lora, "image_text_to_text", cfg)
    parts = parts_of(model)
    return wrapped, parts


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_every_family_has_three_parts_and_the_same_default_picture(name):
    model = _model(name)
    parts = parts_of(model)
    assert parts is not parts_of(None), f"{name}: no part map for {model.config.model_type}"
    base = {n: part_of(n, parts) for n, _ in model.named_parameters()}
    for part in PARTS:
        assert any(p == part for p in base.values()), f"{name}: no {part} weights"
    projector = sum(1 for p in base.values() if p == "projector")
    wrapped, parts = _picture(model)
    names = trainable_parameter_names(wrapped)
    lora = [n for n in names if "lora_" in n]
    full = [n for n in names if "lora_" not in n]
    assert lora and all(part_of(n, parts) == "language_model" for n in lora), name
    assert all(part_of(n, parts) == "projector" for n in full), name
    assert len(full) == projector, f"{name}: not all of the projector trains"


def test_freeze_by_part_and_its_older_spellings():
    wrapped, parts = _picture(_model("llava"), freeze={"vision_tower": False, "projector": True})
    names = trainable_parameter_names(wrapped)
    by_part = {part_of(n, parts) for n in names}
    assert by_part == {"vision_tower", "language_model"}  # tower in full, LoRA on the LM
    assert not [n for n in names if "modules_to_save" in n]
    model = _model("qwen2_vl")
    cfg = ModelConfig.parse({"name_or_path": "x", "freeze_language_model": True})
    configure_trainable(model, cfg, LoraSettings.parse({"enabled": False}), "image_text_to_text")
    trained = {part_of(n, parts_of(model)) for n in trainable_parameter_names(model)}
    assert trained == {"projector"}  # LLaVA stage 1 on Qwen: only the merger
    with pytest.raises(ConfigError, match="not both"):
        ModelConfig.parse({"name_or_path": "x", "freeze": {}, "freeze_vision": False})


def test_lora_target_parts_and_part_names_in_modules_to_save():
    model = _model("idefics3")
    cfg = ModelConfig.parse({"name_or_path": "x", "freeze": {"vision_tower": True}})
    lora = LoraSettings.parse({"r": 2, "target_parts": ["vision_tower"], "modules_to_save": []})
    configure_trainable(model, cfg, lora, "image_text_to_text")
    wrapped = apply_lora(model, lora, "image_text_to_text", cfg)
    names = trainable_parameter_names(wrapped)
    lora_parts = {part_of(n, parts_of(model)) for n in names if "lora_" in n}
    assert lora_parts == {"vision_tower"}
    # modules_to_save empty: the unfrozen connector trains in full (saved in base/)
    assert {part_of(n, parts_of(model)) for n in names if "lora_" not in n} == {"projector"}
    with pytest.raises(ConfigError, match="no module named 'nope'"):
        _lora = LoraSettings.parse({"modules_to_save": ["nope"]})
        apply_lora(_model("llava"), _lora, "image_text_to_text", cfg)
