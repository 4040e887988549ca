"""Medical VQA: VQA-RAD (radiology), Slake-VQA (radiology, English by default), Path-VQA.

Fields: question, answer (case as published; scoring normalises it), answer_type ("closed" or
"open": the published OPEN/CLOSED where a copy has it, else "closed" for yes/no answers).

Publications followed:
- VQA-RAD: the hub copy https://huggingface.co/datasets/flaviagiammarino/vqa-rad (of the OSF
  release https://osf.io/89kps/); Path-VQA: https://huggingface.co/datasets/flaviagiammarino/path-vqa.
- Slake: the official Slake1.0 (https://www.med-vqa.com/slake/) and its hub copy
  https://huggingface.co/datasets/BoKelvin/SLAKE; also its parquet re-packagings (e.g.
  https://huggingface.co/datasets/mdwiratathya/SLAKE-vqa-english).

Parquet layout (VQA-RAD, Path-VQA, Slake re-packagings): a local copy of the hub repository,
i.e. files `<split>-0000i-of-0000n[-<hash>].parquet`, usually under `data/`, with columns image
(struct {bytes, path}), question, answer. The split is the file name's prefix (train;
validation / valid / val; test). `--source owner/name` (a hub name that is not a local path)
reads the hub directly when there is network. Ids are `<split>-<row>` (row counted over the
split's files in name order, before any filtering), or `<split>-<qid>` with a `qid` column.

Slake release layout (`--source` is the folder, or the one holding `Slake1.0/`):
    train.json, validate.json (validation.json on the hub), test.json: each one JSON array of
        {img_id, img_name "xmlab<N>/source.jpg" (below imgs/), question, answer, q_lang en|zh,
        location, modality, answer_type OPEN|CLOSED, base_type, content_type, triple, qid}
    imgs/xmlab<N>/source.jpg (beside mask.png, detection.json, question.json), or imgs.zip
        holding that tree (read in place, not unzipped)
English and Chinese questions are interleaved; option `language` (en by default, as Med-PaLM M
reports English Slake; zh; all) picks them, for the release and for parquet copies with a
`q_lang` column. Ids are `<split>-<qid>` (qids are unique over both languages); meta keeps
img_id, img_name, q_lang, location, modality, content_type, base_type and the published
answer type. Note: VQA-RAD's published train and test questions share images (a known
property of the data set); Path-VQA and Slake split by image.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from generalist.catalog.parts import vqa_parts
from generalist.catalog.records import DATASETS, BadRecord, Dataset, IterRecords, Record
from generalist.catalog.task import TASKS, Task, normalize_text
from generalist.errors import DataError
from generalist.sources.files import check_split, image_problem, missing_keys, parquet_rows

from .slake_files import (
    LANGUAGE_HELP,
    META_KEYS,
    REQUIRED_KEYS,
    SlakeImages,
    check_language,
    keep_language,
    release_root,
    split_rows,
)

ADAPTER_VERSION = 2  # 2: Slake's published answer_type; the Slake JSON release; option language
REQUIRED_COLUMNS = ("image", "question", "answer")
# File-name prefixes of each split in the hub copies (Path-VQA: validation; others: val/valid).
SPLIT_PREFIXES = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "val", "dev"),
    "test": ("test",),
}
_HUB_NAME = re.compile(r"^[\w.-]+/[\w.-]+$")


def answer_type(answer: str, published: object = None) -> str:
    """The published OPEN/CLOSED type where there is one, else 'closed' for yes/no answers and
    'open' for the rest (the split VQA papers report)."""
    kind = str(published or "").strip().lower()
    if kind in ("open", "closed"):
        return kind
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


def _image_bytes(cell: object, source: Path) -> tuple[bytes | None, str]:
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


def _text(value: object) -> str:
    return "" if value is None else str(value).strip()


def _record(
    row: Mapping[str, Any], record_id: str, split: str, image: bytes, meta: dict[str, Any]
) -> Record:
    question, answer = _text(row.get("question")), _text(row.get("answer"))
    if row.get("answer_type"):
        meta["published_answer_type"] = str(row["answer_type"]).lower()
    return Record(
        id=record_id,
        split=split,
        images=(image,),
        fields={
            "question": question,
            "answer": answer,
            "answer_type": answer_type(answer, row.get("answer_type")),
        },
        meta=meta,
    )


def _row_id(split: str, qid: object, n: int) -> str:
    return f"{split}-{qid}" if qid not in (None, "") else f"{split}-{n:06d}"


def _parquet_record(
    row: dict[str, Any], n: int, split: str, source: Path, where: str, file: str
) -> Record | BadRecord:
    if not _text(row.get("question")) or not _text(row.get("answer")):
        return BadRecord(f"{where}: empty question or answer")
    image, problem = _image_bytes(row.get("image"), source)
    problem = problem or image_problem(image or b"")
    if problem or image is None:
        return BadRecord(f"{where}: {problem}")
    meta: dict[str, Any] = {"source_file": file, "row": n}
    return _record(row, _row_id(split, row.get("qid"), n), split, image, meta)


def _parquet_records(
    source: Path, split: str, dataset: str, language: str
) -> Iterator[Record | BadRecord]:
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
            if "q_lang" in row and not keep_language(row["q_lang"], language):
                continue
            yield _parquet_record(row, n - 1, split, root, f"{dataset}: {name} row {i}", file)


def _release_records(
    path: Path, rows: list[Any], images: SlakeImages, split: str, dataset: str, language: str
) -> Iterator[Record | BadRecord]:
    """Records of one split file of the Slake JSON release."""
    try:
        for i, row in enumerate(rows):
            where = f"{dataset}: {path} record {i}"
            missing = missing_keys(row, REQUIRED_KEYS)
            if missing:
                yield BadRecord(f"{where} lacks keys {missing}")
                continue
            if not keep_language(row.get("q_lang"), language):
                continue
            if not _text(row["question"]) or not _text(row["answer"]):
                yield BadRecord(f"{where}: empty question or answer")
                continue
            image = images.read(str(row["img_name"]), where)
            if isinstance(image, BadRecord):
                yield image
                continue
            meta = {"source_file": path.name, "row": i, "qid": row.get("qid")}
            meta.update({k: row[k] for k in META_KEYS if row.get(k) not in (None, "")})
            yield _record(row, _row_id(split, row.get("qid"), i), split, image, meta)
    finally:
        images.close()


def make_iter_records(dataset: str, splits: tuple[str, ...]) -> IterRecords:
    """The adapter of one VQA dataset (they differ only in name and splits); Slake's also takes
    option `language`."""

    def iter_records(
        source: Path, split: str, language: str = "en"
    ) -> Iterator[Record | BadRecord]:
        check_split(split, splits, dataset)
        language = check_language(language, dataset)  # a bad value fails here, not at next()
        root = release_root(source) if dataset == "slake_vqa" else None
        if root is not None:  # the split file and the images are found (or not) now
            path, rows = split_rows(root, split, dataset)
            return _release_records(
                path, rows, SlakeImages(root, dataset), split, dataset, language
            )
        return _parquet_records(source, split, dataset, language)

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
_PARQUET = "hub parquet: data/<split>-*.parquet, columns image {bytes, path}, question, answer"
_PUBLISHED = {
    "slake_vqa": "Slake1.0 / BoKelvin/SLAKE: train.json, validate.json (or validation.json), "
    "test.json + imgs/ or imgs.zip; or " + _PARQUET
}
for _name, _splits in _VQA_SPLITS.items():
    DATASETS.register(
        Dataset(
            name=_name,
            iter_records=make_iter_records(_name, _splits),
            splits=_splits,
            version=ADAPTER_VERSION,
            description=f"{_name}: medical VQA questions with one image each",
            published_format=_PUBLISHED.get(_name, _PARQUET),
            homepage=_HOMEPAGES[_name],
            options={"language": LANGUAGE_HELP} if _name == "slake_vqa" else {},
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
