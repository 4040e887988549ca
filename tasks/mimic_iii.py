"""MIMIC-III radiology report summarization: findings -> impression (CT/MR of head, chest, ...).

Fields: findings, impression, and modality, body_part where the source has them.

MIMIC-III needs PhysioNet credentials, so there is no public file to copy; the processed
releases built from it (https://physionet.org/content/mimiciii/1.4/) are read in these forms:
- MIMIC-RRS / RadSum23, which Med-PaLM M evaluates on (Chen et al., ACL 2023,
  https://aclanthology.org/2023.acl-short.41/; BioNLP 2023 shared task,
  https://vilmedic.app/misc/bionlp23/sharedtask/): one folder per modality-anatomy pair
  (`CT_head`, `CT_chest`, `CT_abdomen-pelvis`, `MR_head`, ..., and `all`) holding
  `{train,validate,test}.findings.tok` and `.impression.tok`, line i of one the findings of
  line i of the other. `--source` is one pair folder, or the release root: then every pair
  folder is read except `all` (its union; read it with `--source <root>/all`, or when it is the
  only folder), in name order, or those of option `pairs=CT_head,MR_head`. The pair is in each
  record's meta, its modality and anatomy in fields modality, body_part ("CT", "head"); ids
  `mimic_iii-<pair>-<split>-<line>` are unique over pairs. Line counts that differ are an
  error naming both files and their counts, checked for every pair before any record.
- Van Veen et al. (RadAdapt, clin-summ, https://github.com/StanfordMIMI/clin-summ): one file
  per split named train, validate (or validation, dev) and test, either `<split>.csv` with
  header columns `findings`, `impression` and optionally `id`, `modality`, `body_part`; or
  `<split>.jsonl` as clin-summ writes it: {"idx", "inputs" (findings), "target" (impression)}.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from generalist.catalog.parts import generation_parts
from generalist.catalog.records import DATASETS, BadRecord, Dataset, Record
from generalist.catalog.task import TASKS, Task
from generalist.errors import ConfigError, DataError
from generalist.sources.files import first_file, json_lines, missing_keys

ADAPTER_VERSION = 2  # 2: the MIMIC-RRS .tok release
SPLIT_FILES = {
    "train": ("train",),
    "validation": ("validate", "validation", "dev"),
    "test": ("test",),
}
CSV_REQUIRED = ("findings", "impression")
OPTIONAL = ("modality", "body_part")
UNION_PAIR = "all"  # MIMIC-RRS's folder with every pair's reports together
PAIRS_HELP = (
    "MIMIC-RRS release root only: the modality-anatomy folders to read, comma-separated "
    "(default: every one but `all`)"
)


def find_split_file(source: Path, split: str) -> Path:
    """`<stem>.csv` or `<stem>.jsonl` for the first of the split's stems that exists."""
    path = first_file(
        source, (f"{s}{ext}" for s in SPLIT_FILES[split] for ext in (".csv", ".jsonl"))
    )
    if path is not None:
        return path
    names = [f"{s}.csv|.jsonl" for s in SPLIT_FILES[split]]
    raise DataError(
        f"mimic_iii: no file for split {split!r} in {source}; expected one of {names}, or "
        f"MIMIC-RRS <pair>/{SPLIT_FILES[split][0]}.findings.tok + .impression.tok"
    )


def _is_pair(folder: Path) -> bool:
    return any(folder.glob("*.findings.tok"))


def rrs_pairs(source: Path, pairs: str) -> list[Path] | None:
    """The MIMIC-RRS pair folders to read, or None when `source` is no MIMIC-RRS release."""
    source = Path(source)
    if _is_pair(source):
        if pairs:
            raise ConfigError(
                f"mimic_iii: option pairs is for the release root; {source} is a pair"
            )
        return [source]
    found = (
        sorted(p for p in source.iterdir() if p.is_dir() and _is_pair(p)) if source.is_dir() else []
    )
    if not found:
        return None
    by_name = {p.name: p for p in found}
    if pairs:
        wanted = [name.strip() for name in pairs.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in by_name]
        if unknown:
            raise ConfigError(
                f"mimic_iii: no pair folder {unknown} in {source}; it has {sorted(by_name)}"
            )
        return [by_name[name] for name in wanted]
    return [p for p in found if p.name != UNION_PAIR] or found


def _line_count(path: Path) -> int:
    with open(path, "rb") as file:
        return sum(1 for _ in file)


def _pair_files(folder: Path, split: str) -> tuple[Path, Path]:
    """(findings, impression) of one split in one pair folder, their line counts checked."""
    stem = next((s for s in SPLIT_FILES[split] if (folder / f"{s}.findings.tok").is_file()), None)
    stem = stem or SPLIT_FILES[split][0]
    findings, impression = folder / f"{stem}.findings.tok", folder / f"{stem}.impression.tok"
    for path in (findings, impression):
        if not path.is_file():
            raise DataError(f"mimic_iii: missing {path} (split {split!r} of pair {folder.name})")
    counts = _line_count(findings), _line_count(impression)
    if counts[0] != counts[1]:
        raise DataError(
            f"mimic_iii: {findings} has {counts[0]} lines but {impression} has {counts[1]}; "
            f"line i of one must be the findings / impression of line i of the other"
        )
    return findings, impression


def _rrs_records(
    folders: list[Path], split: str, files: list[tuple[Path, Path]]
) -> Iterator[Record | BadRecord]:
    for folder, (findings_path, impression_path) in zip(folders, files):
        pair = folder.name
        modality, _, body_part = pair.partition("_")
        with open(findings_path, "rb") as findings, open(impression_path, "rb") as impressions:
            for number, lines in enumerate(zip(findings, impressions), start=1):
                where = f"mimic_iii: {findings_path} / {impression_path.name} line {number}"
                try:
                    finding, impression = (line.decode("utf-8").strip() for line in lines)
                except UnicodeDecodeError as err:
                    yield BadRecord(f"{where}: not UTF-8 ({err})")
                    continue
                fields = {"findings": finding, "impression": impression}
                if body_part:
                    fields.update(modality=modality, body_part=body_part)
                yield _checked(
                    fields,
                    f"mimic_iii-{pair}-{split}-{number}",
                    split,
                    {"pair": pair, "source_file": f"{pair}/{findings_path.name}", "line": number},
                    where,
                )


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    with open(path, encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        columns = reader.fieldnames or []
        missing = [c for c in CSV_REQUIRED if c not in columns]
        if missing:
            raise DataError(
                f"mimic_iii: {path} lacks columns {missing} (has {columns}); "
                f"expected a header with findings, impression [, id, modality, body_part]"
            )
        yield from enumerate(reader, start=1)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadRecord]]:
    for number, row in json_lines(path):
        if isinstance(row, json.JSONDecodeError):
            yield number, BadRecord(f"mimic_iii: {path} line {number}: bad JSON ({row})")
            continue
        if missing_keys(row, ("inputs", "target")):
            if number == 1:
                raise DataError(
                    f"mimic_iii: {path} line 1 lacks keys inputs/target; expected "
                    f'clin-summ jsonl {{"idx", "inputs", "target"}}'
                )
            yield number, BadRecord(f"mimic_iii: {path} line {number} lacks inputs/target")
            continue
        yield number, {"id": row.get("idx"), "findings": row["inputs"], "impression": row["target"]}


def _checked(
    fields: dict[str, Any], record_id: str, split: str, meta: dict[str, Any], where: str
) -> Record | BadRecord:
    """The record, or a BadRecord naming `where` when findings or impression is empty."""
    for key in ("findings", "impression"):
        if not isinstance(fields[key], str) or not fields[key].strip():
            return BadRecord(f"{where}: empty {key}")
    fields = {**fields, "findings": fields["findings"].strip()}
    fields["impression"] = fields["impression"].strip()
    return Record(id=record_id, split=split, fields=fields, meta=meta)


def iter_mimic_iii(source: Path, split: str, pairs: str = "") -> Iterator[Record | BadRecord]:
    """One record per report: findings and impression (both non-empty). Layout and option
    `pairs`: see the module docstring."""
    folders = rrs_pairs(source, pairs)  # a bad `pairs` or count mismatch fails here, not at next()
    if folders is not None:
        return _rrs_records(folders, split, [_pair_files(f, split) for f in folders])
    if pairs:
        raise ConfigError(
            f"mimic_iii: option pairs is for a MIMIC-RRS release; {source} is not one"
        )
    return _table_records(find_split_file(source, split), split)


def _table_records(path: Path, split: str) -> Iterator[Record | BadRecord]:
    rows = _csv_rows(path) if path.suffix == ".csv" else _jsonl_rows(path)
    for number, row in rows:
        if isinstance(row, BadRecord):
            yield row
            continue
        where = f"mimic_iii: {path} {'row' if path.suffix == '.csv' else 'line'} {number}"
        given_id = row.get("id")
        record_id = f"mimic_iii-{given_id}" if given_id not in (None, "") else None
        fields = {"findings": row.get("findings"), "impression": row.get("impression")}
        fields.update({k: row[k] for k in OPTIONAL if row.get(k)})
        meta = {"source_file": path.name, "row": number}
        yield _checked(fields, record_id or f"mimic_iii-{split}-{number}", split, meta, where)


DATASETS.register(
    Dataset(
        name="mimic_iii",
        iter_records=iter_mimic_iii,
        version=ADAPTER_VERSION,
        description="MIMIC-III radiology reports: findings -> impression",
        published_format="MIMIC-RRS <pair>/{train,validate,test}.{findings,impression}.tok, "
        "or {train,validate,test}.csv (findings, impression) or clin-summ .jsonl",
        homepage="https://physionet.org/content/mimiciii/",
        options={"pairs": PAIRS_HELP},
    )
)


def _findings(fields: Mapping[str, Any]) -> str:
    return f"Findings: {fields['findings']}"


TASKS.register(
    Task(
        name="mimic_iii_summarization",
        kind="summarization",
        dataset="mimic_iii",
        instructions=(
            "You are a helpful radiology assistant. Summarize the findings of the radiology report "
            "into an impression.",
            "Write the impression section for the following radiology findings.",
            "Summarize these radiology findings in a short impression.",
        ),
        parts=generation_parts("Write the impression.", "impression", _findings),
        shots=1,
        description="MIMIC-III radiology report summarization (findings -> impression).",
    )
)
