"""Your own JSONL or CSV file of images and text, read as Records without writing Python.

Two row forms, the two that people's files come in:

- conversation (what ms-swift, LLaMA-Factory and TRL write): `{"messages": [{"role": "user",
  "content": "<image>Is there an effusion?"}, {"role": "assistant", "content": "yes"}],
  "images": ["img/1.png"]}`. `conversations` with `from`/`value` (ShareGPT) reads the same, and a
  content may be a list of `{"type": "text", "text": ...}` / `{"type": "image"}` parts. One
  user turn and the assistant turn that answers it make a row; the question is the user text
  with its image markers taken out (the task's prompt places the images), the answer fills the
  `answer` field (and `label`, for a classification task).
- flat: one column per field, under the user's names: `FlatSource.fields` maps ours (image,
  question, answer, label, report, context, options, id, split, group) to theirs.

Image paths are relative to the data file. Splits come from a field (`split_field`; val, valid
and dev mean validation) or from fractions of a hash of the row's group (its `group` field, else
its image paths, so one image never lands in two splits) salted with a seed.
A row that cannot be read, an image that is missing and a label outside the declared ones are
BadRecords naming the file and line: the shard writer stops on the first, or skips and counts
them with --skip-bad.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from generalist.catalog.records import SPLITS, BadRecord, Record
from generalist.errors import DataError
from generalist.sources.files import check_split, patient_split, read_image

# Our field names a flat form can map (image and id/split/group are not prompt fields).
FLAT_FIELDS = ("image", "question", "answer", "label", "report", "context", "options")
ROW_KEYS = ("id", "split", "group")
SPLIT_ALIASES = {"val": "validation", "valid": "validation", "dev": "validation", "eval": "test"}
IMAGE_MARKERS = ("<image>", "<img>")


@dataclass(frozen=True)
class FlatSource:
    """How to read one data file. `fields`: our name -> the file's column / key (flat form).

    `target`: the field every row must fill (the task's answer); `labels`: the allowed values
    of `label` (classification), empty for any. `fractions`: split -> share of rows, used when
    `split_field` is empty; the rest is train.
    """

    path: Path
    form: str = "flat"
    fields: Mapping[str, str] = field(default_factory=dict)
    target: str = "answer"
    labels: tuple[str, ...] = ()
    split_field: str = ""
    fractions: Mapping[str, float] = field(default_factory=lambda: {"validation": 0.1, "test": 0.1})
    seed: int = 0
    name: str = "own data"


def rows(path: Path, name: str) -> Iterator[tuple[int, dict[str, object] | BadRecord]]:
    """(line number, row) of a .jsonl / .json-lines or .csv / .tsv file; a row that cannot be
    read is a BadRecord naming file and line (csv: a wrong number of cells)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{name}: data file {path} does not exist")
    if path.suffix.lower() in (".csv", ".tsv"):
        yield from _csv_rows(path, name, "\t" if path.suffix.lower() == ".tsv" else ",")
        return
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        raise DataError(
            f"{name}: {path}: read are .csv, .tsv and .jsonl (one JSON object per line) files; "
            f"a .json list converts with: jq -c '.[]' {path.name} > {path.stem}.jsonl"
        )
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                yield number, BadRecord(f"{name}: {path} line {number} is not valid JSON ({err})")
                continue
            if not isinstance(row, dict):
                yield number, BadRecord(f"{name}: {path} line {number} is not a JSON object")
                continue
            yield number, row


def _csv_rows(
    path: Path, name: str, delimiter: str
) -> Iterator[tuple[int, dict[str, object] | BadRecord]]:
    with open(path, encoding="utf-8-sig", newline="") as file:  # -sig: Excel's byte-order mark
        reader = csv.reader(file, delimiter=delimiter)
        try:
            header = [c.strip() for c in next(reader)]
        except StopIteration:
            raise DataError(f"{name}: {path} is empty (a header line is expected)") from None
        except csv.Error as err:
            raise DataError(f"{name}: {path} line 1 is not a csv header ({err})") from None
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                yield reader.line_num, BadRecord(f"{name}: {path} line {reader.line_num}: {err}")
                continue
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != len(header):
                yield (
                    reader.line_num,
                    BadRecord(
                        f"{name}: {path} line {reader.line_num} has {len(cells)} cells; the header "
                        f"has {len(header)} (a comma inside a value needs quotes)"
                    ),
                )
                continue
            yield reader.line_num, dict(zip(header, cells, strict=True))


def check_columns(source: FlatSource) -> None:
    """DataError before any work when the first row lacks a mapped column (a wrong mapping)."""
    if source.form == "conversation":
        return
    for _, row in rows(source.path, source.name):
        if isinstance(row, BadRecord):
            continue
        wanted = [c for c in source.fields.values() if c]
        if source.split_field:
            wanted.append(source.split_field)
        missing = [c for c in wanted if c not in row]
        if missing:
            raise DataError(
                f"{source.name}: {source.path} has no column(s) {missing} (its columns: "
                f"{list(row)}); fix the `fields` mapping of the task"
            )
        return


def iter_records(source: FlatSource, split: str) -> Iterator[Record | BadRecord]:
    """The Records of `split` in `source` (see the module docstring)."""
    check_split(split, SPLITS, source.name)
    check_columns(source)
    for number, row in rows(source.path, source.name):
        where = f"{source.name}: {source.path} line {number}"
        if isinstance(row, BadRecord):
            yield row
            continue
        parsed = _conversation(row, where) if source.form == "conversation" else _flat(source, row)
        if isinstance(parsed, BadRecord):
            yield parsed
            continue
        fields, image_paths, keys = parsed
        row_split = _split_of(source, keys, image_paths, where)
        if isinstance(row_split, BadRecord):
            yield row_split
            continue
        if row_split != split:
            continue
        problem = _field_problem(source, fields, where)
        if problem is not None:
            yield problem
            continue
        images = []
        for relative in image_paths:
            data = read_image(source.path.parent / relative, where)
            if isinstance(data, BadRecord):
                yield data
                break
            images.append(data)
        else:
            yield Record(
                id=keys.get("id") or f"{source.path.stem}-{number}",
                split=split,
                images=tuple(images),
                fields=fields,
                meta={"file": source.path.name, "line": number, "images": list(image_paths)},
            )


Parsed = tuple[dict[str, object], list[str], dict[str, str]]


def _flat(source: FlatSource, row: Mapping[str, object]) -> Parsed:
    fields: dict[str, object] = {}
    images: list[str] = []
    for ours, theirs in source.fields.items():
        value = row.get(theirs)
        if ours == "image":
            images = _paths(value)
        elif ours == "options":
            fields["options"] = _options(value)
        elif ours in FLAT_FIELDS:
            fields[ours] = "" if value is None else str(value).strip()
    keys = {k: str(row.get(source.fields[k]) or "").strip() for k in ROW_KEYS if k in source.fields}
    if source.split_field:
        keys["split"] = str(row.get(source.split_field) or "").strip()
    return fields, images, keys


def _paths(value: object) -> list[str]:
    """Image paths of a cell: a JSON list, or one path, or paths separated by ';'."""
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    return [p.strip() for p in str(value or "").split(";") if p.strip()]


def _options(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    return [o.strip() for o in str(value or "").split("|") if o.strip()]


def _text(content: object) -> str:
    """A turn's text: a string, or the text parts of a list of {type, text} parts."""
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return str(content or "")


def _conversation(row: Mapping[str, object], where: str) -> Parsed | BadRecord:
    turns = row.get("messages", row.get("conversations"))
    if not isinstance(turns, list):
        return BadRecord(f"{where} has no `messages` list (conversation form)")
    said: dict[str, list[str]] = {"user": [], "assistant": []}
    roles = {"human": "user", "gpt": "assistant"}
    for turn in turns:
        if not isinstance(turn, dict):
            return BadRecord(f"{where}: a turn is not an object ({turn!r})")
        role = str(turn.get("role", turn.get("from", "")))
        said.setdefault(roles.get(role, role), []).append(
            _text(turn.get("content", turn.get("value")))
        )
    if len(said["user"]) != 1 or len(said["assistant"]) != 1:
        return BadRecord(
            f"{where} has {len(said['user'])} user and {len(said['assistant'])} assistant turns; "
            f"one question and its answer per row are read (split longer conversations)"
        )
    question = said["user"][0]
    for marker in IMAGE_MARKERS:
        question = question.replace(marker, " ")
    answer = said["assistant"][0].strip()
    fields: dict[str, object] = {"question": " ".join(question.split()), "answer": answer}
    fields["label"] = fields["report"] = answer  # whichever the task's kind answers with
    keys = {k: str(row[k]).strip() for k in ROW_KEYS if row.get(k) not in (None, "")}
    return fields, _paths(row.get("images", row.get("image"))), keys


def _split_of(
    source: FlatSource, keys: Mapping[str, str], images: Sequence[str], where: str
) -> str | BadRecord:
    if source.split_field or "split" in source.fields:
        value = keys.get("split", "").lower()
        value = SPLIT_ALIASES.get(value, value)
        if value not in SPLITS:
            return BadRecord(f"{where}: split {keys.get('split')!r} is not one of {list(SPLITS)}")
        return value
    group = keys.get("group") or ";".join(images) or keys.get("id") or where
    test = source.fractions.get("test", 0.0)
    return patient_split(group, f"seed{source.seed}", source.fractions.get("validation", 0.0), test)


def _field_problem(
    source: FlatSource, fields: Mapping[str, object], where: str
) -> BadRecord | None:
    value = str(fields.get(source.target, "")).strip()
    if not value:
        return BadRecord(f"{where}: field {source.target!r} is empty")
    if source.labels and source.target == "label" and value not in source.labels:
        return BadRecord(
            f"{where}: label {value!r} is not one of the declared labels {list(source.labels)}"
        )
    return None
