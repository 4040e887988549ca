"""ZeRO-3 + LoRA on 2 CPU ranks for every tiny VLM family, in each prompt format: one DeepSpeed
launch a format trains the families in turn (tests/support/train_in_turn.py; the launch, not the
steps, is what such a test costs). Micro-batches mix image and text-only examples, and at some
steps one rank's is text only: its masked dummy image keeps both ranks running the vision tower
(ZeRO-3 hangs when ranks run different modules), even with different tile counts per rank. The
ranks stay in step, the token-mask preflight passes, each loss falls and each saved model dir
keeps its prompt_format. (Tiny LLaVA's ZeRO-3 run, with its adapter checked against the engine's
partitioned state, is in tests/train/test_runs.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from support import chat_templates as templates
from support import tiny_gemma3_qwen_mllama as gemma3_qwen_mllama
from support import tiny_idefics3_smolvlm_llava_next as tiled
from support import tiny_paligemma_qwen2_vl as paligemma_qwen2_vl
from support.model_data import CORPUS
from support.train_in_turn import Turn, zero3_in_turn

pytestmark = pytest.mark.slow

# the chat template each family's instruct checkpoints ship (Idefics3: its successor's)
TEMPLATE = {"qwen2_vl": "qwen2_vl", "gemma3": "gemma3", "qwen2_5_vl": "qwen2_vl",
            "qwen3_vl": "qwen3_vl", "mllama": "mllama", "idefics3": "smolvlm"}  # fmt: skip
TEMPLATE |= {f: f for f in tiled.FAMILIES if f not in TEMPLATE}
# Gemma 3's chat loss (its <end_of_turn> too) needs 16 steps to fall; tiled images take up to
# 512 tokens
STEPS = {"gemma3": 16}
MAX_LENGTH = dict.fromkeys(tiled.FAMILIES, 512)
ROLE_WORDS = "You are a helpful assistant. system user assistant model User: Assistant: [INST]"


def save_tiny(family: str, root: Path, corpus: list[str]) -> Path:
    if family == "qwen2_vl":
        return paligemma_qwen2_vl.save_tiny_qwen2_vl(root, corpus)
    if family in tiled.SAVERS:
        return tiled.SAVERS[family](root, corpus)
    if family == "gemma3":
        return gemma3_qwen_mllama.save_tiny_gemma3(root, corpus)
    if family == "mllama":
        return gemma3_qwen_mllama.save_tiny_mllama(root, corpus)
    return gemma3_qwen_mllama.save_tiny_qwen_vl(root, corpus, family)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("families")
    corpus = [*CORPUS, ROLE_WORDS, "[/INST]"]
    return {
        family: templates.attach_chat_template(save_tiny(family, root / family, corpus), template)
        for family, template in TEMPLATE.items()
    }


@pytest.mark.parametrize("prompt_format", ["raw", "chat"])
def test_zero3_two_ranks_mixed_batches_learn_for_every_family(
    saved: dict[str, Path], tmp_path: Path, prompt_format: str
) -> None:
    turns = {
        family: Turn(
            {"name_or_path": str(path), "prompt_format": prompt_format},
            STEPS.get(family, 12),
            MAX_LENGTH.get(family, 256),
        )
        for family, path in saved.items()
    }
    runs, configs = zero3_in_turn(tmp_path, turns, tag=prompt_format)
    for family, config in configs.items():
        steps = turns[family].steps
        curve = runs.losses(config.with_suffix(""))
        assert sorted(curve) == list(range(1, steps + 1)) and runs.falls(curve), (family, curve)
        model_json = (
            config.with_suffix("") / "checkpoints" / f"step-{steps:06d}" / "model" / "model.json"
        )
        assert json.loads(model_json.read_text())["model"]["prompt_format"] == prompt_format, family
