"""The published chat templates of the families we test (README.md beside this file says where
each comes from), and a helper that gives a saved tiny checkpoint its real template.

    from support import chat_templates as templates

    templates.attach_chat_template(tiny_dir, "qwen2_vl")
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).parent
FAMILIES = (
    "gemma3",
    "qwen2_vl",
    "llava",
    "llava_next",
    "llava_onevision",
    "smolvlm",
    "mllama",
    "qwen3_vl",
)


def chat_template(family: str) -> str:
    """The stored template text of `family` (one of FAMILIES)."""
    if family not in FAMILIES:
        raise KeyError(f"no stored chat template {family!r}; one of {FAMILIES}")
    return (HERE / f"{family}.jinja").read_text(encoding="utf-8")


def attach_chat_template(model_dir: str | Path, family: str) -> Path:
    """Write `family`'s template into a saved checkpoint dir, where transformers reads it for
    both the processor and the tokenizer (chat_template.jinja), and into tokenizer_config.json's
    `chat_template` (older loaders, and tokenizer-only checkpoints)."""
    root = Path(model_dir)
    text = chat_template(family)
    (root / "chat_template.jinja").write_text(text, encoding="utf-8")
    config = root / "tokenizer_config.json"
    if config.is_file():
        data = json.loads(config.read_text(encoding="utf-8"))
        data["chat_template"] = text
        config.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return root
