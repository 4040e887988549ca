"""SmolVLM's and LLaVA-OneVision's processors where transformers cannot build them.

Both processors always hold a video processor, and transformers 5.x video processors need
torchvision, even when only images are used (as Qwen2-VL's, see qwen2_vl_processor). Without a
usable torchvision `load_videoless` builds the checkpoint's own processor class with its own
image processor (PIL backend), tokenizer and processor_config.json settings, and no video
processor: images and text go through the real class's code, videos raise. SmolVLM's processor
also refuses to start without `num2words`, which only its video prompts use; a stand-in that
raises when called takes its place. `save_pretrained` writes the tokenizer, the image processor,
the processor_config.json and the chat template, so transformers with torchvision loads the
real processor from the same directory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from generalist.model.qwen2_vl_processor import checkpoint_file, find_chat_template, processor_class
from generalist.model.torchvision_guard import torchvision_usable

if TYPE_CHECKING:
    from transformers import ProcessorMixin

VIDEO_HOLDING = {"SmolVLMProcessor", "LlavaOnevisionProcessor"}
NOT_SETTINGS = {"self", "image_processor", "tokenizer", "video_processor", "kwargs"}


def needs_videoless(src: str | os.PathLike[str]) -> bool:
    """True when `src` holds SmolVLM's or LLaVA-OneVision's processor and torchvision is out."""
    return processor_class(src) in VIDEO_HOLDING and not torchvision_usable()


def _settings(src: str | os.PathLike[str], cls: type) -> dict[str, Any]:
    """processor_config.json's settings that the class takes (its __init__ parameters), and
    the chat template (wherever the directory holds it: find_chat_template)."""
    import inspect

    path = checkpoint_file(src, "processor_config.json")
    data = json.loads(path.read_text()) if path else {}
    takes = set(inspect.signature(cls.__init__).parameters) - NOT_SETTINGS
    out = {k: v for k, v in data.items() if k in takes}
    template = find_chat_template(src)
    if template:
        out["chat_template"] = template
    return out


def _no_num2words(*args: object, **kwargs: object) -> str:
    raise ImportError("SmolVLM video prompts need `num2words` (pip install num2words)")


def videoless_class(name: str) -> type:
    """The processor class `name` accepting no video processor (its own name and code)."""
    import transformers

    base = getattr(transformers, name)
    if name == "SmolVLMProcessor":
        from transformers.models.smolvlm import processing_smolvlm

        if not processing_smolvlm.num2words:
            processing_smolvlm.num2words = _no_num2words

    def check(self: ProcessorMixin, argument_name: str, argument: object) -> object:
        if argument is None and argument_name == "video_processor":
            return None
        return base.check_argument_for_proper_class(self, argument_name, argument)

    def save_pretrained(
        self: ProcessorMixin, save_directory: str | os.PathLike[str], **kwargs: object
    ) -> None:
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(out)
        self.image_processor.save_pretrained(out)
        settings = {"processor_class": name, **_own_settings(self)}
        (out / "processor_config.json").write_text(json.dumps(settings, indent=2) + "\n")
        if isinstance(self.chat_template, str):
            (out / "chat_template.jinja").write_text(self.chat_template)

    attrs = {"check_argument_for_proper_class": check, "save_pretrained": save_pretrained}
    if name == "SmolVLMProcessor":  # its apply_chat_template reads video_processor.num_frames

        def apply_chat_template(
            self: ProcessorMixin,
            conversation: list[dict[str, object]],
            *args: object,
            **kwargs: object,
        ) -> object:  # ProcessorMixin's own: a string, token ids or a BatchFeature
            """ProcessorMixin's (images and text); SmolVLM's own only adds video defaults."""
            from transformers.processing_utils import ProcessorMixin

            return ProcessorMixin.apply_chat_template(self, conversation, *args, **kwargs)

        attrs["apply_chat_template"] = apply_chat_template
    return type(name, (base,), {**attrs, "__module__": __name__})


def _own_settings(processor: ProcessorMixin) -> dict[str, Any]:
    keys = ("image_seq_len", "num_image_tokens", "vision_feature_select_strategy")
    keys += ("vision_aspect_ratio",)
    return {k: getattr(processor, k) for k in keys if getattr(processor, k, None) is not None}


def load_videoless(src: str | os.PathLike[str]) -> ProcessorMixin:
    """The processor at `src` (see the module docstring)."""
    from transformers import AutoImageProcessor, AutoTokenizer

    name = processor_class(src)
    assert name in VIDEO_HOLDING, name
    cls = videoless_class(name)
    image_processor = AutoImageProcessor.from_pretrained(src)
    tokenizer = AutoTokenizer.from_pretrained(src)
    return cls(image_processor, tokenizer, None, **_settings(src, cls.__mro__[1]))
