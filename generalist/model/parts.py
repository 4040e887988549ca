"""The three parts of a vision-language model, per family: vision tower, projector, language model.

`model.freeze` and `lora.target_parts` / `lora.modules_to_save` name parts, so "LoRA on the
language model, train the projector, freeze the tower" reads the same for every family. A part
is a set of module-name fragments (dotted, matched whole: "visual.merger" matches
"model.visual.merger.mlp.0" but not "model.visualx"); a name belongs to the part of its longest
matching fragment, so Qwen's patch merger (the projector, inside `visual`) is the projector,
and anything unmatched (lm_head, embeddings) is the language model. Pinned for every family by
tests/model/test_parts.py on tiny models built from each transformers config class.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

PARTS = ("vision_tower", "projector", "language_model")
_LLAVA = {
    "vision_tower": ("vision_tower",),
    "projector": ("multi_modal_projector", "image_newline"),
    "language_model": ("language_model", "lm_head"),
}
_QWEN = {
    "vision_tower": ("visual",),
    "projector": ("visual.merger", "visual.deepstack_merger_list"),
    "language_model": ("language_model", "lm_head"),
}
FAMILY_PARTS: dict[str, dict[str, tuple[str, ...]]] = {
    "llava": _LLAVA,
    "llava_next": _LLAVA,
    "llava_onevision": _LLAVA,
    "paligemma": _LLAVA,
    "gemma3": _LLAVA,
    "mllama": {**_LLAVA, "vision_tower": ("vision_model",)},
    "blip-2": {
        "vision_tower": ("vision_model",),
        "projector": ("qformer", "query_tokens", "language_projection"),
        "language_model": ("language_model",),
    },
    "qwen2_vl": _QWEN,
    "qwen2_5_vl": _QWEN,
    "qwen3_vl": _QWEN,
    "idefics3": {
        "vision_tower": ("vision_model",),
        "projector": ("connector",),
        "language_model": ("text_model", "lm_head"),
    },
}
FAMILY_PARTS["smolvlm"] = FAMILY_PARTS["idefics3"]
# any other VLM: the usual names (a composed model is LLaVA-shaped)
DEFAULT_PARTS = {
    "vision_tower": ("vision_tower", "vision_model", "visual", "vision_encoder"),
    "projector": ("multi_modal_projector", "language_projection", "connector"),
    "language_model": ("language_model", "text_model", "lm_head"),
}


def model_type(model: nn.Module) -> str:
    """The transformers model_type of a (peft-wrapped) model; "" when it has none."""
    get = getattr(model, "get_base_model", None)
    base = get() if callable(get) else model
    return str(getattr(getattr(base, "config", None), "model_type", "") or "")


def parts_of(model: nn.Module, family: str = "") -> dict[str, tuple[str, ...]]:
    """The part -> fragments map of a model (causal LMs: everything is the language model)."""
    if family == "causal_lm":
        return {"vision_tower": (), "projector": (), "language_model": ()}
    return FAMILY_PARTS.get(model_type(model), DEFAULT_PARTS)


def part_of(name: str, parts: dict[str, tuple[str, ...]]) -> str:
    """The part a parameter or module name belongs to (see the module docstring)."""
    dotted = f".{name}."
    best, length = "language_model", 0
    for part, fragments in parts.items():
        for fragment in fragments:
            if f".{fragment}." in dotted and len(fragment) > length:
                best, length = part, len(fragment)
    return best


def part_roots(model: nn.Module, part: str, family: str = "") -> list[str]:
    """The outermost module names of `part` in `model` (what peft's modules_to_save takes)."""
    import torch

    parts = parts_of(model, family)
    modules = dict(model.named_modules())
    inside = [n for n in modules if n and part_of(n, parts) == part]
    inside = [n for n in inside if _own_fragment(n, parts, part)]
    roots = [n for n in inside if not any(n.startswith(f"{o}.") for o in inside if o != n)]
    out = []
    for name in roots:  # peft wraps modules, not containers (Qwen3-VL's deepstack mergers)
        module = modules[name]
        if isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict)):
            out += [f"{name}.{child}" for child, _ in module.named_children()]
        else:
            out.append(name)
    return out


def _own_fragment(name: str, parts: dict[str, tuple[str, ...]], part: str) -> bool:
    """True when the name itself matches one of the part's fragments (not just by default)."""
    return any(f".{f}." in f".{name}." for f in parts.get(part, ()))
