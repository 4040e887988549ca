"""Finding and reading the MIMIC-CXR free-text reports. tasks/mimic_cxr.py uses them.

PhysioNet publishes the reports in the MIMIC-CXR project (https://physionet.org/content/mimic-cxr/,
versions 2.0.0 and 2.1.0), not in MIMIC-CXR-JPG (https://physionet.org/content/mimic-cxr-jpg/):
`mimic-cxr-reports.zip`, whose members are `files/p10/p10000032/s50414267.txt`, or that tree
unzipped. `wget -r` leaves the two projects side by side:
    physionet.org/files/mimic-cxr-jpg/2.1.0/   csv tables + files/pXX/pSUBJECT/sSTUDY/*.jpg
    physionet.org/files/mimic-cxr/2.0.0/       mimic-cxr-reports.zip (+ the DICOMs, if fetched)
The reports are looked for, in order: where option `reports` says (the project folder, the zip
itself, or an unzipped tree); else in the JPG root itself (zip, unzipped into files/ beside the
images, or mimic-cxr-reports/files/); else in the MIMIC-CXR project beside it, newest version
first. The zip is read in place. No reports anywhere is an error naming the places looked at.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from generalist.catalog.records import BadRecord
from generalist.errors import DataError
from generalist.sources.files import ZipMembers

REPORTS_ZIP = "mimic-cxr-reports.zip"
UNZIPPED = "mimic-cxr-reports"  # the folder some guides unzip into
REPORTS_HELP = (
    "where the MIMIC-CXR reports are: the mimic-cxr project folder (with mimic-cxr-reports.zip "
    "or its unzipped files/), or the zip itself (default: looked for in --source, then in "
    "physionet.org/files/mimic-cxr/<version>/ beside the JPG download)"
)
MAX_PROBES = 16  # studies whose report decides whether a folder holds the unzipped reports


def report_member(subject: str, study: str) -> str:
    """files/p10/p10000032/s50414267.txt: a study's report, below the project (or zip) root."""
    return f"files/p{subject[:2]}/p{subject}/s{study}.txt"


class Reports:
    """The reports of one download: a zip read in place, or an unzipped tree (`root`)."""

    def __init__(self, root: Path | None = None, archive: ZipMembers | None = None) -> None:
        self.root, self.archive = root, archive

    def __str__(self) -> str:
        return str(self.archive.path if self.archive is not None else self.root)

    def read(self, member: str, where: str) -> str | BadRecord:
        """The text of report `member` (report_member), or a BadRecord naming file or zip."""
        if self.archive is not None:
            data = self.archive.read(member, f"{where}: report")
            if isinstance(data, BadRecord):
                return data
            return data.decode("utf-8", errors="replace")
        assert self.root is not None
        path = self.root / member
        if not path.is_file():
            return BadRecord(f"{where}: report {path} is missing")
        return path.read_text(encoding="utf-8", errors="replace")

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()


def _version_key(folder: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", folder.name))


def places(jpg_root: Path) -> list[Path]:
    """Folders that may hold the reports: the JPG root, then the MIMIC-CXR project folders
    beside MIMIC-CXR-JPG (`.../mimic-cxr-jpg[/<version>]` -> `.../mimic-cxr/<version>`)."""
    jpg_root = Path(jpg_root).resolve()
    found = [jpg_root]
    for top in (jpg_root.parent, jpg_root):
        sibling = top.parent / "mimic-cxr"
        if top.name == "mimic-cxr-jpg" and sibling.is_dir():
            versions = [p for p in sibling.iterdir() if p.is_dir() and _version_key(p)]
            found += [*sorted(versions, key=_version_key, reverse=True), sibling]
    return found


def _in(place: Path, probes: list[str], dataset: str, trust_tree: bool) -> Reports | None:
    """The reports in `place` (an unzipped tree holding a probed report, else the zip), or None.
    trust_tree: a files/ folder is taken as the tree even when no probed report is in it."""
    for tree in (place, place / UNZIPPED):
        if any((tree / member).is_file() for member in probes):
            return Reports(root=tree)
    archive = place / REPORTS_ZIP
    if archive.is_file():
        return _zip(archive, probes, dataset)
    for tree in (place, place / UNZIPPED):
        if trust_tree and (tree / "files").is_dir():
            return Reports(root=tree)
    return None


def _zip(path: Path, probes: list[str], dataset: str) -> Reports:
    archive = ZipMembers(path, dataset)
    if probes and not any(archive.member(m) is not None for m in probes):
        archive.close()
        raise DataError(
            f"{dataset}: {path} holds none of the reports of the first studies of the split "
            f"file (such as {probes[0]}); is it MIMIC-CXR's {REPORTS_ZIP}?"
        )
    return Reports(archive=archive)


def find_reports(
    jpg_root: Path, option: str | None, studies: Iterable[tuple[str, str]], dataset: str
) -> Reports:
    """Where the reports are (module docstring), probing the reports of the first `studies`
    (subject_id, study_id); DataError naming the places looked at when there are none."""
    probes: list[str] = []
    for subject, study in studies:
        member = report_member(subject, study)
        if member not in probes:
            probes.append(member)
        if len(probes) == MAX_PROBES:
            break
    if option:
        path = Path(option).expanduser()
        if path.is_file():
            return _zip(path, probes, dataset)
        found = _in(path, probes, dataset, trust_tree=True) if path.is_dir() else None
        if found is None:
            raise DataError(
                f"{dataset}: option reports={option}: found neither {path / REPORTS_ZIP} nor "
                f"the unzipped reports {path}/files/pXX/pSUBJECT/sSTUDY.txt"
            )
        return found
    looked = places(jpg_root)
    for place in looked:
        found = _in(place, probes, dataset, trust_tree=False)
        if found is not None:
            return found
    raise DataError(
        f"{dataset}: no MIMIC-CXR reports found: looked for {REPORTS_ZIP} and "
        f"files/pXX/pSUBJECT/sSTUDY.txt in {', '.join(map(str, looked))}; the reports are the "
        f"MIMIC-CXR project (https://physionet.org/content/mimic-cxr/): put it beside the JPGs "
        f"as wget -r does (physionet.org/files/mimic-cxr/2.0.0) or pass --option reports=PATH"
    )
