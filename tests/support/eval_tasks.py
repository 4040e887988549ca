"""A user module (loaded by path) with tiny synthetic evaluation tasks of three kinds:
`eval_colors` (VQA with open/closed answer types, one image), `eval_shapes` (classification
over three labels, one image) and `eval_qa` (text-only multiple choice)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from generalist.catalog.parts import classification_parts, multiple_choice_parts, vqa_parts
from generalist.catalog.records import DATASETS, Dataset, Record
from generalist.catalog.task import TASKS, Task

COLORS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}
SHAPES = ("circle", "square", "triangle")
SIZES = {"train": 6, "test": 7}
TINY = {"hidden_size": 32, "heads": 2, "image_size": 32, "patch_size": 16, "seed": 0}
CORPUS = [
    "Instructions: Answer the question. Look and answer. Classify the shape. Which shape?",
    "Given <image>. Q: what colour is it? is it red? green blue yes no A:",
    "Q: Which shape is it? Options: (A) circle (B) square (C) triangle",
    "Q: question 0? 1? 2? 3? 4? 5? 6? Options: (A) up (B) down (C) left (D) right",
    "Pick one option. Name the shape. <img>",
]


def tiny_model_dir(path: Path) -> Path:
    """A tiny LLaVA (untrained LoRA made non-zero so the adapter can be saved) on disk."""
    import torch

    from generalist.model.build import build_model
    from generalist.model.config import LoraSettings, ModelConfig
    from generalist.model.model_dir import save_model_dir

    cfg = ModelConfig.parse({"tiny": TINY})
    bundle = build_model(cfg, LoraSettings.parse({}), texts_for_tokenizer=CORPUS)
    with torch.no_grad():
        for name, param in bundle.model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5, generator=torch.Generator().manual_seed(1))
    return save_model_dir(bundle, path)


def png(rgb: tuple[int, int, int], mark: int, split: str) -> bytes:
    image = Image.new("RGB", (16, 16), rgb)
    image.putpixel((0, 0), (mark, list(SIZES).index(split), 9))  # unique bytes per record
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def color_records(source: Path, split: str) -> Iterator[Record]:
    names = sorted(COLORS)
    for i in range(SIZES[split]):
        name = names[i % 3]
        if i % 2:
            fields = {"question": f"is it {name}?", "answer": "yes", "answer_type": "closed"}
        else:
            fields = {"question": "what colour is it?", "answer": name, "answer_type": "open"}
        yield Record(f"{split}-c{i}", split, (png(COLORS[name], i, split),), fields)


def shape_records(source: Path, split: str) -> Iterator[Record]:
    for i in range(SIZES[split]):
        rgb = list(COLORS.values())[i % 3]
        label = SHAPES[i % 3]
        yield Record(f"{split}-s{i}", split, (png(rgb, 100 + i, split),), {"label": label})


def qa_records(source: Path, split: str) -> Iterator[Record]:
    for i in range(SIZES[split]):
        options = ["up", "down", "left", "right"]
        fields = {"question": f"question {i}?", "options": options, "answer": options[i % 4]}
        yield Record(f"{split}-q{i}", split, (), fields)


_DATASETS = {"eval_colors": color_records, "eval_shapes": shape_records, "eval_qa": qa_records}
for _name, _fn in _DATASETS.items():
    if _name not in DATASETS:
        DATASETS.register(Dataset(name=_name, iter_records=_fn, splits=tuple(SIZES)))

_TASKS = [
    Task(
        name="eval_colors",
        kind="vqa",
        dataset="eval_colors",
        instructions=("Answer the question.", "Look and answer."),
        parts=vqa_parts,
        shots=1,
    ),
    Task(
        name="eval_shapes",
        kind="classification",
        dataset="eval_shapes",
        instructions=("Classify the shape.", "Which shape?", "Name the shape."),
        parts=classification_parts("Which shape is it?", SHAPES),
        labels=SHAPES,
        shots=1,
    ),
    Task(
        name="eval_qa",
        kind="medical_qa",
        dataset="eval_qa",
        instructions=("Pick one option.",),
        parts=multiple_choice_parts,
        shots=0,
    ),
]
for _task in _TASKS:
    if _task.name not in TASKS:
        TASKS.register(_task)
