"""Medical VQA: VQA-RAD (radiology), Slake-VQA (English part), Path-VQA (pathology).

Published on the Hugging Face hub as parquet with image bytes (the adapters read them through
`datasets`). Fields: question, answer, answer_type ("closed" for yes/no answers, else "open").

Source layout: a local copy of the hub repository (e.g. `flaviagiammarino/vqa-rad`), i.e.
parquet files named `<split>-0000i-of-0000n[-<hash>].parquet`, usually under `data/`, with
columns image (struct {bytes, path}), question, answer. The split is the file name's prefix
(train; validation / valid / val; test). `--source owner/name` (a hub name that is not a local
path) reads the hub directly when there is network. A Slake copy with a `q_lang` column keeps
only English rows; its own `answer_type` (OPEN/CLOSED) is kept in meta as `published_answer_type`.
Ids are `<split>-<row>` (row counted over the split's files in name order, before any
filtering), or `<split>-<qid>` when the copy has a `qid` column.
Note: VQA-RAD's published train and test questions share images (a known property of the
data set); Path-VQA and Slake split by image.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from generalist.catalog.parts import vqa_parts
from generalist.catalog.records import DATASETS, BadRecord, Dataset, IterRecords, Record
from generalist.catalog.task import TASKS, Task, normalize_text
from generalist.errors import DataError
from generalist.sources.files import check_split, image_problem, parquet_rows

ADAPTER_VERSION = 1
REQUIRED_COLUMNS = ("image", "question", "answer")
# File-name prefixes of each split in the hub copies (Path-VQA: validation; others: val/valid).
SPLIT_PREFIXES = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}
_HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")


def answer_type(answer: str) -> str:
    """'closed' for yes/no answers, else 'open' (the split VQA papers report)."""
    return "closed" if normalize_text(answer) in ("yes", "no") else "open"


def split_files(source: Path, split: str, dataset: str) -> list[Path]:
    """The parquet files of `split` under `source` (any depth), in name order."""
    if not Path(source).is_dir():
        raise DataError(
            f"{dataset}: source {source} is not a directory; give the local copy of the "
            f"hub repository (with data/<split>-*.parquet) or a hub name owner/name"
        )
    prefixes = SPLIT_PREFIXES[split]
    files = sorted(
        p
        for p in Path(source).rglob("*.parquet")
        if re.split(r"[-_.]", p.name, maxsplit=1)[0].lower() in prefixes
    )
    if not files:
        found = sorted(p.name for p in Path(source).rglob("*.parquet"))
        raise DataError(
            f"{dataset}: no parquet file for split {split!r} under {source} (looked for names "
            f"starting with {'/'.join(prefixes)}-; found {found or 'no parquet files'})"
        )
    return files


def _image_bytes(cell: Any, source: Path) -> tuple[bytes | None, str]:
    """Bytes of an image cell ({bytes, path}); a cell with only a path reads it under source."""
    if isinstance(cell, (bytes, bytearray)) and cell:  # copies that store plain binary
        return bytes(cell), ""
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return bytes(cell["bytes"]), ""
        if cell.get("path"):
            path = Path(source) / str(cell["path"])
            if path.is_file():
                return path.read_bytes(), ""
            return None, f"image has no bytes and its path {path} does not exist"
    return None, "image cell is empty"


def _record(
    row: dict[str, Any], n: int, split: str, source: Path, where: str, file: str
) -> Record | BadRecord:
    question, answer = str(row.get("question") or "").strip(), row.get("answer")
    answer = "" if answer is None else str(answer).strip()
    if not question or not answer:
        return BadRecord(f"{where}: empty question or answer")
    image, problem = _image_bytes(row.get("image"), source)
    problem = problem or image_problem(image or b"")
    if problem:
        return BadRecord(f"{where}: {problem}")
    meta: dict[str, Any] = {"source_file": file, "row": n}
    if row.get("answer_type"):
        meta["published_answer_type"] = str(row["answer_type"]).lower()
    qid = row.get("qid")
    return Record(
        id=f"{split}-{qid}" if qid not in (None, "") else f"{split}-{n:06d}",
        split=split,
        images=(image,),
        fields={"question": question, "answer": answer, "answer_type": answer_type(answer)},
        meta=meta,
    )


def make_iter_records(dataset: str, splits: tuple[str, ...]) -> IterRecords:
    """The adapter of one VQA dataset (they differ only in name and splits)."""

    def iter_records(source: Path, split: str) -> Iterator[Record | BadRecord]:
        check_split(split, splits, dataset)
        text = str(source)
        if not Path(source).exists() and _HUB_NAME.match(text):
            sources: list[tuple[list[str] | str, Path, str]] = [(text, Path("."), text)]
        else:
            sources = [
                ([str(f)], Path(source), str(f.relative_to(source)))
                for f in split_files(source, split, dataset)
            ]
        n = 0  # row number over the split's files: the record id
        for files, root, file in sources:
            name = f"{root / file}" if isinstance(files, list) else file
            rows = parquet_rows(files, split, REQUIRED_COLUMNS, f"{dataset}: {name}")
            for i, row in enumerate(rows):
                n += 1
                if "q_lang" in row and str(row["q_lang"]).lower() != "en":
                    continue  # Slake: English questions only (as Med-PaLM M)
                yield _record(row, n - 1, split, root, f"{dataset}: {name} row {i}", file)

    return iter_records


_VQA_SPLITS = {
    "vqa_rad": ("train", "test"),
    "slake_vqa": ("train", "validation", "test"),
    "path_vqa": ("train", "validation", "test"),
}
_HOMEPAGES = {
    "vqa_rad": "https://huggingface.co/datasets/flaviagiammarino/vqa-rad",
    "slake_vqa": "https://www.med-vqa.com/slake/",
    "path_vqa": "https://huggingface.co/datasets/flaviagiammarino/path-vqa",
}
for _name, _splits in _VQA_SPLITS.items():
    DATASETS.register(
        Dataset(
            name=_name,
            iter_records=make_iter_records(_name, _splits),
            splits=_splits,
            version=ADAPTER_VERSION,
            description=f"{_name}: medical VQA questions with one image each",
            published_format="hub parquet: data/<split>-*.parquet, columns image "
            "{bytes, path}, question, answer",
            homepage=_HOMEPAGES[_name],
            # VQA-RAD's published test questions are asked about images also in its train split.
            images_split_disjoint=_name != "vqa_rad",
        )
    )

_VQA_INSTRUCTIONS = {
    "vqa_rad": (
        "You are a helpful radiology assistant. Answer the question about the radiology image.",
        "Look at the radiology image and answer the question briefly.",
        "Answer the following question about this radiograph, CT or MRI in a few words.",
    ),
    "slake_vqa": (
        "You are a helpful radiology assistant. Answer the question about the medical image.",
        "Answer the question about this radiology image in a few words.",
    ),
    "path_vqa": (
        "You are a helpful pathology assistant. Answer the question about the pathology image.",
        "Look at the pathology image and answer the question briefly.",
    ),
}
_DESCRIPTIONS = {
    "vqa_rad": "VQA-RAD: 315 radiology images, 3.5k clinician-written questions.",
    "slake_vqa": "Slake-VQA (English): radiology images with open and closed questions.",
    "path_vqa": "Path-VQA: pathology images with open and yes/no questions.",
}

for _name, _instructions in _VQA_INSTRUCTIONS.items():
    TASKS.register(
        Task(
            name=_name,
            kind="vqa",
            dataset=_name,
            instructions=_instructions,
            parts=vqa_parts,
            shots=1,
            description=_DESCRIPTIONS[_name],
        )
    )
