"""Small helpers the source adapters share: finding files in a downloaded tree, checked
csv / JSON / JSON-lines / parquet reading whose errors name the file and row, reading members
of a zip archive in place, image reading with a cheap decode check, and deterministic
patient-level splits."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from generalist.catalog.records import BadRecord
from generalist.errors import DataError


def first_file(source: Path, names: Iterable[str | Path]) -> Path | None:
    """The first of `names` (relative to `source`) that is a file, or None."""
    return next((p for p in (Path(source) / n for n in names) if p.is_file()), None)


def require_file(source: Path, names: Sequence[str], dataset: str, hint: str = "") -> Path:
    """The first of `names` (relative to `source`) that exists; DataError naming them if none.

    Several names cover the variants a download comes in (`x.csv` and `x.csv.gz`).
    """
    path = first_file(source, names)
    if path is not None:
        return path
    tried = " or ".join(str(Path(source) / n) for n in names)
    raise DataError(f"{dataset}: missing {tried}" + (f"; {hint}" if hint else ""))


def read_csv(path: Path, required: Iterable[str], dataset: str) -> list[dict[str, str]]:
    """All rows of a csv (plain or .gz) as strings; blank cells are "" (never NaN).

    A missing column is a DataError naming the file, the missing and the present columns.
    Row `i` of the result is line `i + 2` of the file (`csv_row` names it).
    """
    import pandas as pd  # pandas reads .csv.gz transparently and fast; imported lazily

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise DataError(f"{dataset}: cannot read {path} as csv ({err})") from None
    frame.columns = [str(c).strip() for c in frame.columns]
    check_columns(
        list(frame.columns), required, f"{dataset}: {path}", "Is this the published file?"
    )
    return frame.to_dict("records")


def missing_keys(row: object, required: Iterable[str]) -> list[str]:
    """The `required` keys a JSON row lacks (all of them when the row is not an object)."""
    return [k for k in required if not isinstance(row, dict) or k not in row]


def check_columns(columns: list[str], required: Iterable[str], where: str, hint: str = "") -> None:
    """DataError '<where> lacks column(s) [..]; it has [..]' when a required column is absent."""
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(
            f"{where} lacks column(s) {missing}; it has {columns}" + (f". {hint}" if hint else "")
        )


def csv_row(path: Path, index: int) -> str:
    """'file line N' for row `index` of read_csv (line 1 is the header)."""
    return f"{path} line {index + 2}"


# -> Any: any JSON document; each caller checks the shape it needs
def read_json(path: Path, dataset: str) -> Any:  # noqa: ANN401
    """A whole JSON file; DataError naming the file when it does not parse."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DataError(f"{dataset}: {path} is not valid JSON ({err})") from None


def json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value or the json.JSONDecodeError) per non-empty line.

    The error is yielded, not raised, so an adapter can report one bad line and go on.
    """
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                yield number, err


def json_rows(path: Path, required: Sequence[str], dataset: str) -> Iterator[tuple[int, Any]]:
    """(line number, object) per non-empty JSON line; bad lines come out as BadRecord.

    A first line without the required keys means the wrong file or format: raised, not skipped.
    """
    first = True
    for number, row in json_lines(path):
        where = f"{path} line {number}"
        if isinstance(row, json.JSONDecodeError):
            yield number, BadRecord(f"{dataset}: {where} is not valid JSON ({row})")
            continue
        missing = missing_keys(row, required)
        if missing and first:
            raise DataError(
                f"{dataset}: {where} lacks keys {missing}; expected the published "
                f"format with keys {list(required)}"
            )
        first = False
        if missing:
            yield number, BadRecord(f"{dataset}: {where} lacks keys {missing}")
            continue
        yield number, row


def parquet_rows(
    data_files: list[str] | str, split: str, required: Sequence[str], where: str
) -> Iterator[dict[str, Any]]:
    """Rows of parquet files (or a hub name) through `datasets`, streaming (no arrow cache
    copy), with any `image` column left undecoded (its {bytes, path} cells)."""
    import datasets  # heavy; only the parquet adapters need it

    if isinstance(data_files, list):
        stream = datasets.load_dataset(
            "parquet", data_files={split: data_files}, split=split, streaming=True
        )
    else:  # a hub name
        stream = datasets.load_dataset(data_files, split=split, streaming=True)
    columns = list(stream.column_names or [])
    check_columns(columns, required, where)
    if "image" in columns and isinstance(stream.features["image"], datasets.Image):
        stream = stream.cast_column("image", datasets.Image(decode=False))
    return iter(stream)


def read_image(path: Path, where: str) -> bytes | BadRecord:
    """The bytes of an image file, or a BadRecord when it is missing or does not decode."""
    if not path.is_file():
        return BadRecord(f"{where}: image {path} is missing")
    data = path.read_bytes()
    problem = image_problem(data)
    return BadRecord(f"{where}: {path}: {problem}") if problem else data


def image_problem(data: bytes) -> str | None:
    """Why `data` does not decode as an image, or None when it does.

    JPEGs decode in draft mode (1/8 scale): every byte is still read, so truncation shows,
    at a fraction of the cost of a full decode (the shard writer decodes fully later).
    """
    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format == "JPEG":
                image.draft(image.mode, (64, 64))
            image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        return f"image does not decode ({type(err).__name__}: {err})"
    return None


class ZipMembers:
    """The members of a zip archive, read in place (a published zip is never unzipped).

    Members are asked for by their path below the folder the archive was made from: a Slake
    `imgs.zip` holds `imgs/xmlab0/source.jpg`, another copy `xmlab0/source.jpg`; both answer
    `member("xmlab0/source.jpg")`. The top folder is learnt from the first member found
    (a scan of the names, done again only while nothing has been found) and then fixed.
    macOS `__MACOSX/` resource forks are ignored.
    """

    def __init__(self, path: Path, dataset: str) -> None:
        self.path, self.dataset = Path(path), dataset
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, OSError) as err:
            raise DataError(
                f"{dataset}: {self.path} is not a readable zip archive ({err}); download it again"
            ) from None
        self._names = {
            name
            for name in self._zip.namelist()
            if not name.endswith("/") and not name.startswith("__MACOSX/")
        }
        self._prefix: str | None = None

    def __len__(self) -> int:
        return len(self._names)

    def member(self, relative: str) -> str | None:
        """The name of the member holding `relative`, or None when the archive lacks it."""
        if self._prefix is not None:
            name = self._prefix + relative
            return name if name in self._names else None
        found = [n for n in self._names if n == relative or n.endswith("/" + relative)]
        if not found:
            return None
        name = min(found, key=lambda n: (len(n), n))  # the shallowest, when copies nest
        self._prefix = name[: len(name) - len(relative)]
        return name

    def read(self, relative: str, where: str) -> bytes | BadRecord:
        """The bytes of `relative`, or a BadRecord naming the archive and the member when the
        member is missing or damaged (bad CRC, truncated data)."""
        name = self.member(relative)
        if name is None:
            return BadRecord(f"{where}: {relative} is not in {self.path}")
        try:
            return self._zip.read(name)
        except (zipfile.BadZipFile, zlib.error, OSError, EOFError) as err:
            return BadRecord(f"{where}: member {name} of {self.path} is damaged ({err})")

    def close(self) -> None:
        self._zip.close()


def hash_fraction(key: str, salt: str) -> float:
    """A value in [0, 1) fixed by (salt, key): stable across runs and machines."""
    digest = hashlib.sha256(f"{salt}\x1f{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def patient_split(patient: str, salt: str, validation: float, test: float = 0.0) -> str:
    """train / validation / test for one patient, by hash, so a patient is in one split only.

    The first `test` of the hash range is test, the next `validation` is validation.
    """
    value = hash_fraction(patient, salt)
    if value < test:
        return "test"
    return "validation" if value < test + validation else "train"


def check_split(split: str, splits: Sequence[str], dataset: str) -> None:
    """DataError for a split the dataset does not have."""
    if split not in splits:
        raise DataError(f"{dataset} has splits {list(splits)}; not {split!r}")
