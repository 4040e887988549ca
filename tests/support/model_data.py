"""The model tests' tiny images, examples, tokenizer corpus and a few-step trainer (no network)."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from generalist.catalog.records import Example
from generalist.model.bundle import ModelBundle

TINY = {"hidden_size": 32, "heads": 2, "image_size": 32, "patch_size": 16, "seed": 0}
CORPUS = [
    "Instructions: answer the question about the image.",
    "Given <image>. Q: what color is the shape? A: red blue green",
    "Q: is there a circle in the image? A: yes no",
    "Q: what shape is it? A: circle rectangle triangle",
]


def png(color: str = "red", size: int = 40) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def image_example(n: int = 0, color: str = "red") -> Example:
    return Example(
        task="vqa",
        id=f"img{n}",
        prompt="Instructions: answer the question about the image.\n"
        "Given <image>. Q: what color is the shape?\nA:",
        target=color,
        images=(png(color),),
    )


def text_example(n: int = 0, answer: str = "yes") -> Example:
    return Example(
        task="text",
        id=f"txt{n}",
        prompt="Instructions: answer the question.\nQ: is there a circle in the image?\nA:",
        target=answer,
    )


def train(bundle: ModelBundle, batch: dict[str, Any], steps: int = 3, lr: float = 1e-2) -> list:
    """AdamW steps on one fixed batch (the model's own loss); the losses; eval mode after."""
    import torch

    from generalist.batching.model_inputs import model_inputs

    bundle.model.train()
    params = [p for p in bundle.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    torch.manual_seed(0)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = bundle.model(**model_inputs(batch)).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    bundle.model.eval()
    return losses
