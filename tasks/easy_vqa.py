"""easy-VQA (the demo data, shipped in the `easy-vqa` PyPI package): VQA, shape classification,
and a one-line description of the image as a tiny stand-in for report generation.

Publication followed: the easy-vqa package (https://pypi.org/project/easy-vqa/, source
https://github.com/vzhou842/easy-VQA). Published format:
`easy_vqa/data/{train,test}/questions.json` (a list of [question, answer, image_id]) and
`easy_vqa/data/{train,test}/images/<image_id>.png` (64x64 RGB). The package has no validation
split: we hold out train images whose id % 20 == 0, so no image is in two splits.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

from generalist.catalog.parts import classification_parts, generation_parts, vqa_parts
from generalist.catalog.records import DATASETS, Dataset, Record
from generalist.catalog.task import TASKS, Task
from generalist.errors import DataError

SHAPES = ("circle", "rectangle", "triangle")
COLORS = ("blue", "black", "brown", "gray", "green", "red", "teal", "yellow")
VALIDATION_EVERY = 20  # train image ids divisible by this form the validation split
ADAPTER_VERSION = 1


def package_source() -> Path:
    """The data directory inside the installed easy-vqa package (no download needed)."""
    import easy_vqa

    return Path(easy_vqa.__file__).parent / "data"


def _published_split(split: str) -> str:
    if split not in ("train", "validation", "test"):
        raise DataError(f"easy-vqa has splits train, validation, test; not {split!r}")
    return "test" if split == "test" else "train"


def _in_split(image_id: int, split: str) -> bool:
    if split == "test":
        return True
    return (image_id % VALIDATION_EVERY == 0) == (split == "validation")


def _read_questions(source: Path, split: str) -> list[tuple[str, str, int]]:
    path = Path(source) / _published_split(split) / "questions.json"
    if not path.is_file():
        raise DataError(f"easy-vqa: missing {path}; --source is the package's data/ directory")
    try:
        rows = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"easy-vqa: {path} is not valid JSON ({err})") from None
    for n, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 3 and isinstance(row[2], int)):
            raise DataError(f"easy-vqa: {path} row {n}: expected [question, answer, image_id]")
    return [(str(q), str(a), int(i)) for q, a, i in rows]


def _read_image(source: Path, split: str, image_id: int) -> bytes:
    path = Path(source) / _published_split(split) / "images" / f"{image_id}.png"
    if not path.is_file():
        raise DataError(f"easy-vqa: image {path} is missing (referenced by questions.json)")
    return path.read_bytes()


def iter_questions(source: Path, split: str) -> Iterator[Record]:
    """One record per published question."""
    for n, (question, answer, image_id) in enumerate(_read_questions(source, split)):
        if not _in_split(image_id, split):
            continue
        yield Record(
            id=f"{_published_split(split)}-q{n}",
            split=split,
            images=(_read_image(source, split, image_id),),
            fields={"question": question, "answer": answer, "answer_type": _answer_type(answer)},
            meta={"image_id": image_id, "source_file": f"{_published_split(split)}/questions.json"},
        )


def _answer_type(answer: str) -> str:
    return "yes/no" if answer in ("yes", "no") else "shape" if answer in SHAPES else "color"


def infer_shape_and_color(questions: list[tuple[str, str]]) -> tuple[str | None, str | None]:
    """What an image shows, read off its questions (the package stores no per-image labels).

    Every question narrows the candidates: "what color is the triangle?" -> triangle, "is no
    yellow shape present?" 'yes' -> not yellow. None where the questions leave it open.
    """
    shapes, colors = set(SHAPES), set(COLORS)
    for question, answer in questions:
        words = set(re.findall(r"[a-z]+", question))
        negated = bool(words & {"not", "no"})
        for vocab, candidates in ((SHAPES, shapes), (COLORS, colors)):
            mentioned = words & set(vocab)
            if answer in vocab:
                candidates.intersection_update({answer})  # in place: shapes or colors
            elif len(mentioned) == 1 and answer in ("yes", "no"):
                (word,) = mentioned
                if (answer == "yes") != negated:
                    candidates.intersection_update({word})
                else:
                    candidates.discard(word)
            elif len(mentioned) == 1:  # "what color is the triangle?" / "what is the blue shape?"
                candidates.intersection_update(mentioned)
    shape = next(iter(shapes)) if len(shapes) == 1 else None
    color = next(iter(colors)) if len(colors) == 1 else None
    return shape, color


def iter_images(source: Path, split: str) -> Iterator[Record]:
    """One record per image with its shape and colour (for classification and description)."""
    by_image: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for question, answer, image_id in _read_questions(source, split):
        by_image[image_id].append((question, answer))
    for image_id in sorted(by_image):
        if not _in_split(image_id, split):
            continue
        shape, color = infer_shape_and_color(by_image[image_id])
        if shape is None or color is None:
            continue  # its questions do not pin the label down: not a trustworthy record
        yield Record(
            id=f"{_published_split(split)}-img{image_id}",
            split=split,
            images=(_read_image(source, split, image_id),),
            fields={
                "label": shape,
                "shape": shape,
                "color": color,
                "description": f"a {color} {shape}.",
            },
            meta={"image_id": image_id},
        )


DATASETS.register(
    Dataset(
        name="easy_vqa",
        iter_records=iter_questions,
        version=ADAPTER_VERSION,
        description="easy-VQA questions about synthetic shape images (demo data)",
        published_format="questions.json + images/<id>.png in the easy-vqa PyPI package",
        homepage="https://github.com/vzhou842/easy-VQA",
        default_source=package_source,
    )
)
DATASETS.register(
    Dataset(
        name="easy_vqa_images",
        iter_records=iter_images,
        version=ADAPTER_VERSION,
        description="easy-VQA images with the shape and colour their questions establish",
        published_format="questions.json + images/<id>.png in the easy-vqa PyPI package",
        homepage="https://github.com/vzhou842/easy-VQA",
        labels=SHAPES,
        default_source=package_source,
    )
)

TASKS.register(
    Task(
        name="easy_vqa",
        kind="vqa",
        dataset="easy_vqa",
        instructions=(
            "You are a helpful assistant. Answer the question about the image in one word.",
            "Look at the image and answer the question with a single word.",
            "Answer this question about the picture briefly.",
        ),
        parts=vqa_parts,
        shots=1,
        description="Open (shape, colour) and closed (yes/no) questions about a synthetic image.",
    )
)
TASKS.register(
    Task(
        name="easy_vqa_shape",
        kind="classification",
        dataset="easy_vqa_images",
        instructions=(
            "You are a helpful assistant. Classify the shape shown in the image.",
            "Which shape does the image show? Pick one of the options.",
        ),
        parts=classification_parts("Which shape is in the image?", SHAPES),
        labels=SHAPES,
        shots=1,
        description="Shape classification posed as multiple choice over all three shapes.",
    )
)
TASKS.register(
    Task(
        name="easy_vqa_caption",
        kind="report_generation",
        dataset="easy_vqa_images",
        instructions=(
            "You are a helpful assistant. Describe the image in a short sentence.",
            "Write a one-line description of what the image shows.",
        ),
        parts=generation_parts("Describe the image.", "description"),
        shots=1,
        description="A one-line description (colour and shape): a tiny stand-in for a report.",
    )
)
