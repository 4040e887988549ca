"""MIMIC-III radiology report summarization: findings -> impression (CT/MR of head, chest, ...).

Fields: findings, impression, and modality, body_part where the source has them.

Source format (MIMIC-III needs PhysioNet credentials, so there is no public file to copy; we
read the processed layout of Van Veen et al. (RadAdapt, clin-summ), which Med-PaLM M follows):
one file per split named train, validate (or validation, dev) and test, either
- `<split>.csv` with header columns `findings`, `impression` and optionally `id`, `modality`,
  `body_part`; or
- `<split>.jsonl` as clin-summ writes it: {"idx", "inputs" (findings), "target" (impression)}.
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
from generalist.errors import DataError
from generalist.sources.files import first_file, json_lines, missing_keys

ADAPTER_VERSION = 1
SPLIT_FILES = {
    "train": ("train",),
    "validation": ("validate", "validation", "dev"),
    "test": ("test",),
}
CSV_REQUIRED = ("findings", "impression")
OPTIONAL = ("modality", "body_part")


def find_split_file(source: Path, split: str) -> Path:
    """`<stem>.csv` or `<stem>.jsonl` for the first of the split's stems that exists."""
    path = first_file(
        source, (f"{s}{ext}" for s in SPLIT_FILES[split] for ext in (".csv", ".jsonl"))
    )
    if path is not None:
        return path
    names = [f"{s}.csv|.jsonl" for s in SPLIT_FILES[split]]
    raise DataError(f"mimic_iii: no file for split {split!r} in {source}; expected one of {names}")


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


def iter_mimic_iii(source: Path, split: str) -> Iterator[Record | BadRecord]:
    """One record per report: findings and impression (both non-empty)."""
    path = find_split_file(source, split)
    rows = _csv_rows(path) if path.suffix == ".csv" else _jsonl_rows(path)
    for number, row in rows:
        if isinstance(row, BadRecord):
            yield row
            continue
        where = f"mimic_iii: {path} {'row' if path.suffix == '.csv' else 'line'} {number}"
        findings, impression = row.get("findings"), row.get("impression")
        if not isinstance(findings, str) or not findings.strip():
            yield BadRecord(f"{where}: empty findings")
            continue
        if not isinstance(impression, str) or not impression.strip():
            yield BadRecord(f"{where}: empty impression")
            continue
        given_id = row.get("id")
        fields = {"findings": findings.strip(), "impression": impression.strip()}
        fields.update({k: row[k] for k in OPTIONAL if row.get(k)})
        yield Record(
            id=f"mimic_iii-{given_id}"
            if given_id not in (None, "")
            else f"mimic_iii-{split}-{number}",
            split=split,
            fields=fields,
            meta={"source_file": path.name, "row": number},
        )


DATASETS.register(
    Dataset(
        name="mimic_iii",
        iter_records=iter_mimic_iii,
        version=ADAPTER_VERSION,
        description="MIMIC-III radiology reports: findings -> impression",
        published_format="{train,validate,test}.csv (findings, impression) or clin-summ .jsonl",
        homepage="https://physionet.org/content/mimiciii/",
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
