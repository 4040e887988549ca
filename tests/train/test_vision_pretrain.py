"""`generalist pretrain-vision` and `model.tiny.vision_init`: the tower learns the labels, is
saved whole, starts a tiny LLaVA with exactly its weights, and bad input stops with the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from generalist.cli import main as cli
from generalist.errors import ConfigError
from generalist.model.build import build_model
from generalist.train.config import load_config

TEXTS = ["what colour is the picture? red green blue black"]


@pytest.fixture(scope="module")
def tower(shard_root: Path, tiny_config_module) -> tuple[Path, Path]:
    """(config, tower dir): a tower pretrained on train_colors' answers (four solid colours)."""
    config = tiny_config_module("pretrain.yaml")
    out = config.with_name("tower")
    argv = ["pretrain-vision", str(config), "--dataset", "train_colors", "--fields", "answer"]
    assert cli([*argv, "--out", str(out), "--steps", "40", "--batch-size", "8"]) == 0
    return config, out


def test_tower_learns_the_labels_and_is_saved_whole(tower: tuple[Path, Path]) -> None:
    _, out = tower
    result = json.loads((out / "pretrain.json").read_text())
    assert result["classes"] == {"answer": ["black", "blue", "green", "red"]}
    assert result["train_images"] == 24 and result["validation_images"] == 8
    assert result["validation_accuracy"] == {"answer": 1.0}  # solid colours: separable
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {
        p.name for p in out.iterdir()
    }
    assert not out.with_name("tower.tmp").exists()


def test_vision_init_starts_the_tiny_llava_from_the_tower(tower: tuple[Path, Path]) -> None:
    from transformers import CLIPVisionModel

    config, out = tower
    saved = CLIPVisionModel.from_pretrained(out).state_dict()
    plain = build_model(
        load_config(config).model, texts_for_tokenizer=TEXTS
    ).base_model.model.vision_tower.state_dict()
    cfg = load_config(config, [f"model.tiny.vision_init={out}"])
    started = build_model(
        cfg.model, texts_for_tokenizer=TEXTS
    ).base_model.model.vision_tower.state_dict()
    assert saved.keys() == started.keys()
    assert all(torch.equal(saved[k], started[k]) for k in saved)
    assert not all(torch.equal(plain[k], started[k]) for k in saved)


def test_a_tower_of_other_sizes_is_refused(tower: tuple[Path, Path]) -> None:
    config, out = tower
    cfg = load_config(config, [f"model.tiny.vision_init={out}", "model.tiny.patch_size=8"])
    with pytest.raises(ConfigError, match=r"model.tiny.vision_init: .*patch_size 16 vs 8"):
        build_model(cfg.model, texts_for_tokenizer=TEXTS)


def test_bad_input_is_one_line_naming_what(
    tower: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, out = tower
    base = ["pretrain-vision", str(config), "--out", str(tmp_path / "t")]
    cases = [
        ([*base, "--dataset", "train_colors", "--fields", "shape"], "has no field 'shape'"),
        ([*base, "--dataset", "nope", "--fields", "answer"], "dataset 'nope'"),
        ([*base, "--dataset", "train_colors", "--fields", "answer", "--steps", "0"], "--steps"),
        (
            ["train", str(config), f"model.tiny.vision_init={tmp_path}/none"],
            "config key 'model.tiny.vision_init'",
        ),
    ]
    for argv, needle in cases:
        assert cli(argv) == 2
        err = capsys.readouterr().err.strip()
        assert needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "t").exists()
    blip2 = yaml.safe_load(config.read_text())
    blip2["model"]["tiny"].update(architecture="blip2", vision_init=str(out))
    (tmp_path / "blip2.yaml").write_text(yaml.safe_dump(blip2))
    with pytest.raises(ConfigError, match="vision_init starts a LLaVA"):
        load_config(tmp_path / "blip2.yaml")
