"""The recipes under configs/recipes/ load with the strict config loader (so their keys never
rot), name the hub models the README promises, and train as documented: bf16, ZeRO-2 for LoRA,
the chat format for instruct models, LoRA on the language model with the projector trained and
the tower frozen, on the multimedbench mixture. No network: only the config is checked (the hub
check of `check_config` needs the hub)."""

from __future__ import annotations

from pathlib import Path

import pytest

from generalist.catalog.loading import load_catalog
from generalist.train.config import load_config
from generalist.train.preflight import training_mixture

REPO = Path(__file__).parents[2]
RECIPES = {
    "medgemma_4b_it": "google/medgemma-4b-it",
    "qwen2_5_vl_3b_instruct": "Qwen/Qwen2.5-VL-3B-Instruct",
    "qwen2_5_vl_7b_instruct": "Qwen/Qwen2.5-VL-7B-Instruct",
    "smolvlm_instruct": "HuggingFaceTB/SmolVLM-Instruct",
    "llava_1_5_7b": "llava-hf/llava-1.5-7b-hf",
}


def test_every_recipe_is_listed():
    found = {p.stem for p in (REPO / "configs" / "recipes").glob("*.yaml")}
    assert found == set(RECIPES)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_recipe_loads_strictly_and_trains_as_documented(name, monkeypatch):
    monkeypatch.chdir(REPO)
    path = Path("configs/recipes") / f"{name}.yaml"
    assert path.read_text().startswith("# "), path
    assert f"configs/recipes/{name}.yaml" in path.read_text()  # its own launch command
    cfg = load_config(path)
    assert cfg.model.name_or_path == RECIPES[name]
    assert cfg.model.prompt_format == "chat" and cfg.model.dtype == "bfloat16"
    assert cfg.precision == "bf16" and cfg.deepspeed == 2 and cfg.lora.enabled
    frozen = cfg.model.frozen()
    assert (frozen.vision_tower, frozen.projector, frozen.language_model) == (True, False, False)
    assert cfg.lora.target_parts == ["language_model"]
    assert cfg.lora.modules_to_save == ["projector"]
    assert cfg.shards == Path("shards")  # from the repository root, as its comment says
    assert cfg.output_dir == Path(f"runs/{name}")
    load_catalog(cfg.imports)
    assert cfg.mixture == "multimedbench" and training_mixture(cfg).tasks
    if "qwen" in name:  # image tokens grow with pixels: capped before the processor
        assert cfg.model.max_pixels == 1280 * 28 * 28
    if "smolvlm" in name:
        assert cfg.model.max_tiles == 9
