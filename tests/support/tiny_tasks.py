"""A user module (loaded through the config's `imports`) with two tiny synthetic datasets:
`train_colors` (one solid-colour image, "what colour is it?") and `train_words` (text only,
"what is the opposite of X?") and `train_lists` (text only, answers of 1 to 6 words: uneven
target lengths), so training tests need no downloads and mix modalities."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

from PIL import Image

from generalist.catalog.parts import vqa_parts
from generalist.catalog.records import DATASETS, Dataset, Record
from generalist.catalog.task import TASKS, Task

COLORS = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220), "black": (0, 0, 0)}
OPPOSITES = {
    "up": "down",
    "down": "up",
    "hot": "cold",
    "cold": "hot",
    "big": "small",
    "small": "big",
    "left": "right",
    "right": "left",
}
SIZES = {"train": 24, "validation": 8, "test": 8}


def _png(rgb: tuple[int, int, int], mark: tuple[int, int, int]) -> bytes:
    image = Image.new("RGB", (16, 16), rgb)
    image.putpixel((0, 0), mark)  # unique bytes per record: the writer rejects cross-split dupes
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def color_records(source: Path, split: str) -> Iterator[Record]:
    names = sorted(COLORS)
    for i in range(SIZES[split]):
        name = names[i % len(names)]
        mark = (i, list(SIZES).index(split), 7)
        fields = {"question": "what colour is the picture?", "answer": name}
        yield Record(f"{split}-c{i}", split, (_png(COLORS[name], mark),), fields, {"n": i})


def word_records(source: Path, split: str) -> Iterator[Record]:
    words = sorted(OPPOSITES)
    for i in range(SIZES[split]):
        word = words[i % len(words)]
        q = f"what is the opposite of {word}?" + " please answer briefly" * (i % 3)
        yield Record(f"{split}-w{i}", split, (), {"question": q, "answer": OPPOSITES[word]}, {})


GREEK = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta")


def list_records(source: Path, split: str) -> Iterator[Record]:
    for i in range(SIZES[split]):
        n = 1 + (i * 5) % len(GREEK)  # 1..6 target words, in a shuffled order
        fields = {"question": f"name the first {n} greek letters", "answer": " ".join(GREEK[:n])}
        yield Record(f"{split}-l{i}", split, (), fields, {})


DATA = (("train_colors", color_records), ("train_words", word_records))
DATA += (("train_lists", list_records),)
for _name, _fn in DATA:
    if _name not in DATASETS:
        DATASETS.register(Dataset(name=_name, iter_records=_fn))
for _name, _dataset in ((n, n) for n, _ in DATA):
    if _name not in TASKS:
        TASKS.register(
            Task(
                name=_name,
                kind="vqa",
                dataset=_dataset,
                instructions=("Answer the question.",),
                parts=vqa_parts,
                shots=0,
                eval_split="validation",
            )
        )
