"""Fixtures for the model tests: tiny images, a corpus, and a tiny LLaVA builder (no network);
the helpers themselves are in tests/support/model_data.py."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import pytest

from generalist.model.build import build_model
from generalist.model.bundle import ModelBundle
from generalist.model.config import LoraSettings, ModelConfig

from support import model_data
from support.model_data import CORPUS, TINY


@pytest.fixture
def make_bundle() -> Callable[..., ModelBundle]:
    """build_model for a tiny LLaVA; keyword overrides go into model/tiny/lora sections."""

    def make(
        tiny: dict[str, Any] | None = None, lora: dict[str, Any] | None = None, **model: Any
    ) -> ModelBundle:
        cfg = ModelConfig.parse({"tiny": {**TINY, **(tiny or {})}, **model})
        return build_model(cfg, LoraSettings.parse(lora or {}), texts_for_tokenizer=CORPUS)

    return make


@pytest.fixture
def h() -> Any:
    """The helpers of support.model_data under the short names the tests use."""
    return types.SimpleNamespace(
        png=model_data.png,
        image_example=model_data.image_example,
        text_example=model_data.text_example,
        corpus=CORPUS,
        train=model_data.train,
    )
