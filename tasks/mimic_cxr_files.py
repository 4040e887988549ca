"""Reading a MIMIC-CXR-JPG download: its csv tables, its image files, its reports (found by
tasks/mimic_cxr_reports.py) and the sections of a free-text report. tasks/mimic_cxr.py turns
these into records and tasks.

Publications followed: MIMIC-CXR-JPG 2.0.0 / 2.1.0 (https://physionet.org/content/mimic-cxr-jpg/)
and the reports of MIMIC-CXR (https://physionet.org/content/mimic-cxr/). Layout and decisions:
see tasks/mimic_cxr.py's docstring.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path

from generalist.catalog.records import BadRecord
from generalist.sources.files import csv_row, read_csv, read_image, require_file

from .mimic_cxr_reports import Reports, find_reports, report_member

FRONTAL_VIEWS = ("AP", "PA")
SPLIT_NAMES = {"train": "train", "validate": "validation", "test": "test"}

# Report headings -> our section names (what create_section_files.py normalises, in brief).
SECTION_NAMES = {
    "FINDINGS": "findings",
    "FINDING": "findings",
    "FINDINGS AND IMPRESSION": "findings",
    "IMPRESSION": "impression",
    "IMPRESSIONS": "impression",
    "CONCLUSION": "impression",
    "INDICATION": "indication",
    "INDICATIONS": "indication",
    "CLINICAL INDICATION": "indication",
    "HISTORY": "indication",
    "CLINICAL HISTORY": "indication",
    "REASON FOR EXAM": "indication",
    "REASON FOR EXAMINATION": "indication",
}
# A heading is an upper-case phrase ending in ':' at the start of a line (reports indent one
# space); lower-case text such as "PA and lateral views:" never matches.
_HEADING = re.compile(r"^[ \t]*([A-Z][A-Z /()&,'-]*[A-Z)])[ \t]*:", re.MULTILINE)


def parse_report(text: str) -> dict[str, str]:
    """findings, impression and indication of a free-text report ("" where absent).

    Our own small parser (the official create_section_files.py is a script, not a library):
    text runs from a heading to the next heading, whitespace collapsed; repeated sections
    (an addendum's second IMPRESSION) are joined.
    """
    sections: dict[str, list[str]] = {"findings": [], "impression": [], "indication": []}
    headings = list(_HEADING.finditer(text))
    for heading, following in zip(headings, [*headings[1:], None]):
        name = SECTION_NAMES.get(re.sub(r"\s+", " ", heading.group(1)))
        if name is None:
            continue
        body = text[heading.end() : following.start() if following else len(text)]
        body = re.sub(r"\s+", " ", body).strip()
        if body:
            sections[name].append(body)
    return {name: " ".join(parts) for name, parts in sections.items()}


class MimicCxrFiles:
    """The csv tables and file layout of one MIMIC-CXR-JPG download."""

    def __init__(self, source: Path, dataset: str) -> None:
        self.root, self.dataset = Path(source), dataset
        hint = "--source is the MIMIC-CXR-JPG root (with files/ and the csv files)"
        self.split_csv = require_file(source, table_names("split"), dataset, hint)
        self.metadata_csv = require_file(source, table_names("metadata"), dataset, hint)
        columns = ("dicom_id", "study_id", "subject_id", "split")
        self.splits = read_csv(self.split_csv, columns, dataset)
        metadata = read_csv(self.metadata_csv, ("dicom_id", "ViewPosition"), dataset)
        self.view = {row["dicom_id"]: row["ViewPosition"].strip() for row in metadata}
        self.reports: Reports | None = None
        self._parsed: dict[str, dict[str, str] | BadRecord] = {}

    def open_reports(self, option: str | None) -> Reports:
        """Find the reports (tasks/mimic_cxr_reports.py); a DataError when there are none."""
        studies = ((row["subject_id"], row["study_id"]) for row in self.splits)
        self.reports = find_reports(self.root, option, studies, self.dataset)
        return self.reports

    def close(self) -> None:
        if self.reports is not None:
            self.reports.close()

    def study_dir(self, subject: str, study: str) -> Path:
        """files/p10/p10000032/s50414267: where a study's images are."""
        return self.root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"

    def image(self, row: Mapping[str, str], where: str) -> bytes | BadRecord:
        """The row's jpg, or a BadRecord when it is missing or does not decode."""
        path = self.study_dir(row["subject_id"], row["study_id"]) / f"{row['dicom_id']}.jpg"
        return read_image(path, f"{self.dataset}: {where}")

    def report(self, row: Mapping[str, str], where: str) -> dict[str, str] | BadRecord:
        """The parsed report of the row's study (open_reports first), or a BadRecord naming the
        missing file or zip member."""
        assert self.reports is not None, "open_reports() first"
        member = report_member(row["subject_id"], row["study_id"])
        if member not in self._parsed:
            text = self.reports.read(member, f"{self.dataset}: {where}")
            parsed = text if isinstance(text, BadRecord) else parse_report(text)
            self._parsed = {member: parsed}  # rows of a study are adjacent
        return self._parsed[member]

    def rows(self, split: str) -> Iterator[tuple[Mapping[str, str], str] | BadRecord]:
        """(row, 'file line N') of `split` in the split file; an unknown split -> BadRecord."""
        for index, row in enumerate(self.splits):
            where = csv_row(self.split_csv, index)
            published = row["split"].strip()
            if published not in SPLIT_NAMES:
                if split == "train":  # reported once, not once per split
                    yield BadRecord(
                        f"{self.dataset}: {where}: split {published!r} is not one of "
                        f"{list(SPLIT_NAMES)}"
                    )
            elif SPLIT_NAMES[published] == split:
                yield row, where

    def frontal_rows(
        self, split: str, left_out: MutableMapping[str, int]
    ) -> Iterator[tuple[Mapping[str, str], str, str] | BadRecord]:
        """(row, where, view) of the frontal images of `split`; lateral ones are counted in
        left_out["lateral"] (Med-PaLM M uses frontal views only)."""
        for item in self.rows(split):
            if isinstance(item, BadRecord):
                yield item
                continue
            row, where = item
            view = self.view.get(row["dicom_id"], "")
            if view not in FRONTAL_VIEWS:
                left_out["lateral"] += 1
                continue
            yield row, where, view


def table_names(table: str) -> tuple[str, ...]:
    """The names the csv `table` (split, metadata, chexpert) has in releases 2.0.0 and 2.1.0."""
    versions = ("2.0.0", "2.1.0")
    return tuple(f"mimic-cxr-{v}-{table}.csv{gz}" for v in versions for gz in (".gz", ""))
