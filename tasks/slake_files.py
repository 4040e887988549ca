"""Reading the Slake release as its authors publish it: one JSON array of question records per
split plus the images, either unzipped (`imgs/xmlab<N>/source.jpg`) or in `imgs.zip` (read in
place). tasks/medical_vqa.py turns the rows into records; its docstring has the layout.

Publications followed: Slake1.0 (https://www.med-vqa.com/slake/, `Slake.zip` unzips to
`Slake1.0/` with `validate.json`) and its hub copy https://huggingface.co/datasets/BoKelvin/SLAKE
(`validate.json` renamed `validation.json`, images as `imgs.zip`).
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path, PurePosixPath
from typing import Any

from generalist.catalog.records import BadRecord
from generalist.errors import ConfigError, DataError
from generalist.sources.files import (
    ZipMembers,
    image_problem,
    missing_keys,
    read_image,
    read_json,
    require_file,
)

SPLIT_FILES = {
    "train": ("train.json",),
    "validation": ("validation.json", "validate.json"),  # the hub copy's name, then the release's
    "test": ("test.json",),
}
REQUIRED_KEYS = ("img_name", "question", "answer")
# Published keys kept in a record's meta for analysis (`triple`, the KG triple, is left out).
META_KEYS = ("img_id", "img_name", "q_lang", "location", "modality", "content_type", "base_type")
RELEASE_FOLDER = "Slake1.0"  # what the official Slake.zip unzips to
LANGUAGES = ("en", "zh", "all")
LANGUAGE_HELP = (
    "which questions to keep by q_lang: en (default; Med-PaLM M reports English Slake), zh, "
    "or all (both languages)"
)
_CACHED_IMAGES = 16  # questions about one image come together; a few images cover them


def check_language(language: str, dataset: str) -> str:
    """The `language` option, checked: en, zh or all."""
    value = language.strip().lower()
    if value not in LANGUAGES:
        raise ConfigError(
            f"{dataset}: option language={language!r} is not one of {', '.join(LANGUAGES)}"
        )
    return value


def keep_language(q_lang: object, language: str) -> bool:
    """Whether a question in `q_lang` is kept; a copy without q_lang is taken as English (the
    English-only re-packagings drop the column)."""
    if language == "all":
        return True
    return str(q_lang or "en").strip().lower() == language


def release_root(source: Path) -> Path | None:
    """The folder with the release's split files (`source` or its `Slake1.0/`), or None when
    `source` holds none (a parquet re-packaging, then)."""
    for root in (Path(source), Path(source) / RELEASE_FOLDER):
        if any((root / name).is_file() for names in SPLIT_FILES.values() for name in names):
            return root
    return None


def split_rows(root: Path, split: str, dataset: str) -> tuple[Path, list[Any]]:
    """(file, rows) of one split: the JSON array, its first row checked for the release's keys."""
    hint = "the Slake release has train.json, validate.json (validation.json on the hub), test.json"
    path = require_file(root, SPLIT_FILES[split], dataset, hint)
    rows = read_json(path, dataset)
    if not isinstance(rows, list):
        raise DataError(
            f"{dataset}: {path} is a JSON {type(rows).__name__}, not the array of question "
            f"records the Slake release has"
        )
    missing = missing_keys(rows[0], REQUIRED_KEYS) if rows else []
    if missing:
        raise DataError(
            f"{dataset}: {path} record 0 lacks keys {missing}; expected the Slake release's "
            f"records (img_id, img_name, question, answer, q_lang, answer_type, qid, ...)"
        )
    return path, rows


class SlakeImages:
    """The release's images: the unzipped `imgs/` tree, else `imgs.zip` read in place.

    With both present the tree is used, and the zip for an image the tree lacks.
    """

    def __init__(self, root: Path, dataset: str) -> None:
        self.dataset = dataset
        tree, archive = Path(root) / "imgs", Path(root) / "imgs.zip"
        self.tree = tree if tree.is_dir() else None
        self.zip = ZipMembers(archive, dataset) if archive.is_file() else None
        if self.tree is None and self.zip is None:
            raise DataError(
                f"{dataset}: neither {tree}/ nor {archive} exists; the images come with the "
                f"release (imgs/ in Slake1.0, imgs.zip in BoKelvin/SLAKE)"
            )
        self._cache: OrderedDict[str, bytes | BadRecord] = OrderedDict()

    def read(self, img_name: str, where: str) -> bytes | BadRecord:
        """The bytes of `imgs/<img_name>`, or a BadRecord naming the file or zip member."""
        if img_name in self._cache:
            self._cache.move_to_end(img_name)
            return self._cache[img_name]
        data = self._read(img_name, where)
        self._cache[img_name] = data
        if len(self._cache) > _CACHED_IMAGES:
            self._cache.popitem(last=False)
        return data

    def _read(self, img_name: str, where: str) -> bytes | BadRecord:
        relative = PurePosixPath(img_name)
        if not relative.parts or relative.is_absolute() or ".." in relative.parts:
            return BadRecord(f"{where}: img_name {img_name!r} is not a path below imgs/")
        in_tree = self.tree / relative if self.tree is not None else None
        if self.zip is None or (in_tree is not None and in_tree.is_file()):
            return read_image(in_tree or Path(img_name), where)  # in_tree is set: see __init__
        data = self.zip.read(str(relative), where)
        if isinstance(data, BadRecord):
            return data
        problem = image_problem(data)
        if problem:
            return BadRecord(f"{where}: {self.zip.path} member {relative}: {problem}")
        return data

    def close(self) -> None:
        if self.zip is not None:
            self.zip.close()
