"""Qwen2-VL's image + text processing where transformers cannot build its processor.

transformers 5.x builds Qwen2VLProcessor (Qwen2.5-VL's, Qwen3-VL's) only with torchvision:
the processor always holds a video processor, and video processors need torchvision, even when
only images are used. A CPU machine whose torchvision does not fit its torch (a CUDA build from
PyPI beside a CPU torch) cannot load these models' processors at all. `load_processor` then
falls back to `MRopeProcessor` (our own code, for that reason only): the checkpoint's own
image processor (PIL backend) and tokenizer with the processor's image rule, each
<|image_pad|> repeated grid_t * grid_h * grid_w / merge_size^2 times, and its
mm_token_type_ids (1 on image tokens). Videos are not supported. `save_pretrained` writes the
tokenizer, the image processor, a processor_config.json naming the real processor class and the
chat template, so transformers with torchvision loads the real processor from the same directory.
`find_chat_template` finds a directory's template wherever it can be (both fallbacks use it).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image
    from transformers import BaseImageProcessor, BatchFeature, PreTrainedTokenizerBase

from generalist.model.torchvision_guard import torchvision_usable

PROCESSOR_CLASSES = {"Qwen2VLProcessor", "Qwen2_5_VLProcessor", "Qwen3VLProcessor"}
CONFIG_FILES = ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json")


def processor_class(src: str | os.PathLike[str]) -> str | None:
    """The processor class a checkpoint (local dir, or hub id as transformers finds it) names."""
    from transformers.utils import cached_file

    for name in CONFIG_FILES:
        path = Path(src) / name
        if not Path(src).is_dir():  # a hub id: where transformers would read the file from
            try:
                found = cached_file(str(src), name, _raise_exceptions_for_missing_entries=False)
            except (OSError, ValueError):  # offline / unknown: AutoProcessor reports it
                found = None
            path = Path(found) if found else path
        if path.is_file():
            value = json.loads(path.read_text()).get("processor_class")
            if value:
                return str(value)
    return None


def checkpoint_file(src: str | os.PathLike[str], name: str) -> Path | None:
    """A file of a local checkpoint dir, or of a hub id where transformers caches it."""
    from transformers.utils import cached_file

    if Path(src).is_dir():
        path = Path(src) / name
        return path if path.is_file() else None
    try:
        found = cached_file(str(src), name, _raise_exceptions_for_missing_entries=False)
    except (OSError, ValueError):
        return None
    return Path(found) if found else None


# Where a directory can hold its chat template, in the order transformers prefers them: the
# .jinja file (transformers 5), chat_template.json (processor.save_pretrained in 4.x), then the
# "chat_template" key of processor_config.json or tokenizer_config.json (older saves).
TEMPLATE_FILES = (
    "chat_template.jinja",
    "chat_template.json",
    "processor_config.json",
    "tokenizer_config.json",
)


def find_chat_template(src: str | os.PathLike[str]) -> str | None:
    """The chat template of a checkpoint wherever it is (TEMPLATE_FILES), or None."""
    for name in TEMPLATE_FILES:
        path = checkpoint_file(src, name)
        if path is None:
            continue
        if name.endswith(".jinja"):
            return path.read_text(encoding="utf-8")
        value = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
        if isinstance(value, list):  # named templates [{"name", "template"}]: the default one
            named = {t.get("name"): t.get("template") for t in value if isinstance(t, dict)}
            value = named.get("default") or next(iter(named.values()), None)
        if isinstance(value, str) and value:
            return value
    return None


def needs_fallback(src: str | os.PathLike[str]) -> bool:
    """True when `src` holds a Qwen2-VL-style processor and torchvision cannot be used."""
    return processor_class(src) in PROCESSOR_CLASSES and not torchvision_usable()


class MRopeProcessor:
    """Callable like Qwen2VLProcessor for text and images (see the module docstring)."""

    def __init__(
        self,
        image_processor: BaseImageProcessor,
        tokenizer: PreTrainedTokenizerBase,
        name: str = "Qwen2VLProcessor",
        chat_template: str | None = None,
    ) -> None:
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.name = name
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(self.image_token))

    @classmethod
    def from_pretrained(cls, src: str | os.PathLike[str]) -> MRopeProcessor:
        from transformers import AutoImageProcessor, AutoTokenizer

        name = processor_class(src) or "Qwen2VLProcessor"
        return cls(
            AutoImageProcessor.from_pretrained(src),
            AutoTokenizer.from_pretrained(src),
            name,
            find_chat_template(src),
        )

    def __call__(
        self,
        text: str | list[str],
        images: Image.Image | Sequence[Image.Image] | None = None,
        return_tensors: str | None = None,
        **kwargs: object,
    ) -> BatchFeature:
        """input_ids, attention_mask, mm_token_type_ids (+ pixel_values, image_grid_thw)."""
        from transformers import BatchFeature

        texts = [text] if isinstance(text, str) else list(text)
        data: dict[str, Any] = {}
        if images:
            images = images if isinstance(images, (list, tuple)) else [images]
            data = dict(self.image_processor(images=list(images)))
            texts = self._expand(texts, data["image_grid_thw"])
        enc = self.tokenizer(texts, **kwargs)
        ids = [list(row) for row in enc["input_ids"]]
        data["input_ids"] = ids
        data["attention_mask"] = [list(row) for row in enc["attention_mask"]]
        data["mm_token_type_ids"] = [[int(t == self.image_token_id) for t in row] for row in ids]
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _expand(self, texts: list[str], grids: Iterable[Sequence[int]]) -> list[str]:
        """Each image token repeated as many times as its image has merged patches."""
        merge = int(self.image_processor.merge_size) ** 2
        counts = iter([int(g[0] * g[1] * g[2]) // merge for g in grids])
        marker = "\0"  # placeholder, so an expanded token is not expanded again
        out = []
        for t in texts:
            while self.image_token in t:
                t = t.replace(self.image_token, marker * next(counts), 1)
            out.append(t.replace(marker, self.image_token))
        return out

    def batch_decode(self, *args: object, **kwargs: object) -> list[str]:
        return self.tokenizer.batch_decode(*args, **kwargs)

    def save_pretrained(self, out: str | os.PathLike[str]) -> None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(out)
        self.image_processor.save_pretrained(out)
        config = {"processor_class": self.name}
        (out / "processor_config.json").write_text(json.dumps(config, indent=2) + "\n")
        if isinstance(self.chat_template, str):
            (out / "chat_template.jinja").write_text(self.chat_template)
