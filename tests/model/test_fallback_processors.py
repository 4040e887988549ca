"""The torchvision-free fallback processors (Qwen2-VL's MRopeProcessor, SmolVLM's videoless
class) find a chat template wherever a model dir holds it, and a torchvision that is installed
but does not import is hidden (fallback used) or named in one line with both versions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from generalist.errors import ConfigError
from generalist.model import pretrained, torchvision_guard
from generalist.model.pretrained import load_processor
from generalist.model.qwen2_vl_processor import MRopeProcessor, find_chat_template

from support import tiny_idefics3_smolvlm_llava_next as tiny_b
from support import tiny_paligemma_qwen2_vl as tiny

TEMPLATE = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"


def _place(root: Path, where: str, text: str) -> None:
    """Put the template in one of the four places only (clearing the others)."""
    (root / "chat_template.jinja").unlink(missing_ok=True)
    (root / "chat_template.json").unlink(missing_ok=True)
    for name in ("processor_config.json", "tokenizer_config.json"):
        data = json.loads((root / name).read_text())
        data.pop("chat_template", None)
        if name == where:
            data["chat_template"] = text
        (root / name).write_text(json.dumps(data))
    if where == "chat_template.jinja":
        (root / where).write_text(text)
    if where == "chat_template.json":  # as processor.save_pretrained wrote it in transformers 4.x
        (root / where).write_text(json.dumps({"chat_template": text}))


PLACES = (
    "chat_template.jinja",
    "chat_template.json",
    "processor_config.json",
    "tokenizer_config.json",
)


def test_every_fallback_finds_the_chat_template_wherever_the_dir_holds_it(tmp_path, h):
    qwen = tiny.save_tiny_qwen2_vl(tmp_path / "qwen", h.corpus)
    smol = tiny_b.save_tiny_smolvlm(tmp_path / "smol", h.corpus)
    for n, where in enumerate(PLACES):
        text = TEMPLATE + f"{{# {n} #}}"
        for root in (qwen, smol):
            _place(root, where, text)
            assert find_chat_template(root) == text, (root.name, where)
        processor = load_processor(str(qwen), "image_text_to_text")
        assert isinstance(processor, MRopeProcessor) and processor.chat_template == text, where
        smol_processor = load_processor(str(smol), "image_text_to_text")
        assert type(smol_processor).__name__ == "SmolVLMProcessor"
        assert smol_processor.chat_template == text, where
    # named templates (tokenizer_config.json's list form): the default one
    _place(qwen, "tokenizer_config.json", "")
    data = json.loads((qwen / "tokenizer_config.json").read_text())
    data["chat_template"] = [
        {"name": "tool_use", "template": "x"},
        {"name": "default", "template": TEMPLATE},
    ]
    (qwen / "tokenizer_config.json").write_text(json.dumps(data))
    assert find_chat_template(qwen) == TEMPLATE
    # the fallback saves the template where every loader looks first
    processor = load_processor(str(qwen), "image_text_to_text")
    processor.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "chat_template.jinja").read_text() == TEMPLATE


FAKE_TORCHVISION = 'raise RuntimeError("operator torchvision::nms does not exist")\n'
PROBE = """
import sys
from generalist.model.pretrained import load_processor
p = load_processor(sys.argv[1], "image_text_to_text")
import transformers.utils as u
print(type(p).__name__, u.is_torchvision_available())
"""


def test_a_torchvision_that_fails_to_import_is_hidden_and_the_fallback_used(tmp_path, h):
    qwen = tiny.save_tiny_qwen2_vl(tmp_path / "qwen", h.corpus)
    fake = tmp_path / "site"
    (fake / "torchvision").mkdir(parents=True)
    (fake / "torchvision" / "__init__.py").write_text(FAKE_TORCHVISION)  # a CUDA build, say
    info = fake / "torchvision-0.99.0+cu130.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: torchvision\nVersion: 0.99.0+cu130\n"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")]),
    }
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(qwen)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split() == ["MRopeProcessor", "False"]
    import torch

    warned = [line for line in run.stderr.splitlines() if "torchvision" in line]
    assert len(warned) == 1 and "Traceback" not in run.stderr, run.stderr
    assert warned[0].startswith("generalist: torchvision 0.99.0+cu130") and warned[0].endswith(
        "; using processors without it"
    )
    assert (
        f"torchvision 0.99.0+cu130 is installed but does not import beside torch "
        f"{torch.__version__} (RuntimeError: operator torchvision::nms does not exist); "
        "fix: pip uninstall torchvision"
    ) in warned[0]


def test_a_processor_that_needs_the_hidden_torchvision_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(torchvision_guard._state, "problem", "RuntimeError: nms")
    monkeypatch.setattr(pretrained, "needs_fallback", lambda src: False)
    monkeypatch.setattr(pretrained, "needs_videoless", lambda src: False)

    def needs_torchvision(src: str) -> None:
        raise ImportError("InternVLVideoProcessor requires the Torchvision library")

    import transformers

    monkeypatch.setattr(transformers.AutoProcessor, "from_pretrained", needs_torchvision)
    with pytest.raises(ConfigError) as err:
        load_processor(str(tmp_path), "image_text_to_text")
    message = str(err.value)
    assert "\n" not in message and message.startswith(
        f"model.name_or_path: {str(tmp_path)!r} needs torchvision: torchvision "
    )
    assert (
        "(RuntimeError: nms); fix: pip uninstall torchvision, or install the build made for torch"
        in message
    )
