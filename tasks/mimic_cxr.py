"""MIMIC-CXR-JPG: chest X-ray report generation (findings) and 5-condition classification.

Dataset `mimic_cxr`: one record per image with fields findings, impression, indication, view.
Dataset `mimic_cxr_conditions`: one record per (image, condition) of the five Med-PaLM M
conditions with a definite CheXpert label (1 -> yes, 0 -> no; uncertain and blank excluded).
Splits follow the official patient-level split file.

Task `mimic_cxr_classification` asks one yes/no question per record and is scored per condition,
as Med-PaLM M reports it (Table 2/3): `<condition>/auc`, `<condition>/f1` (of "yes"),
`<condition>/accuracy`, and `macro_auc` / `macro_f1`, their means over the five conditions (the
paper's figures); the pooled yes/no figures are `pooled_auc` / `pooled_macro_f1`
(generalist.eval.metrics.choice). Task `mimic_cxr_report` also reports the clinical metrics of
Table 2 (CheXbert F1s, RadGraph F1), from local scorer weights (`eval.scorers`).

Publications followed: MIMIC-CXR-JPG 2.0.0 / 2.1.0 (https://physionet.org/content/mimic-cxr-jpg/)
for the tables and images, MIMIC-CXR 2.0.0 / 2.1.0 (https://physionet.org/content/mimic-cxr/)
for the reports: two PhysioNet projects, two folders. `--source` is the MIMIC-CXR-JPG root:
    mimic-cxr-2.0.0-split.csv[.gz]      dicom_id, study_id, subject_id, split (train/validate/test)
    mimic-cxr-2.0.0-metadata.csv[.gz]   dicom_id, ..., ViewPosition, ...
    mimic-cxr-2.0.0-chexpert.csv[.gz]   subject_id, study_id, 14 conditions (1.0/0.0/-1.0/blank)
    files/p10/p10000032/s50414267/<dicom_id>.jpg
The reports (`mimic-cxr-reports.zip`, members files/p10/p10000032/s50414267.txt, read in place;
or unzipped) are found beside the JPG download as `wget -r` leaves it
(physionet.org/files/mimic-cxr-jpg/2.1.0 next to physionet.org/files/mimic-cxr/2.0.0), or inside
--source, or where option `reports` says (tasks/mimic_cxr_reports.py). Only `mimic_cxr` reads
them; `mimic_cxr_conditions` needs the JPG download alone.
Decisions: frontal views only (ViewPosition AP or PA), as Med-PaLM M. An image whose report
has no FINDINGS section is not a data error (about a fifth of the reports have none): it is
left out and the count is logged as a warning at the end of the split, like lateral views and
studies without CheXpert labels. Missing or undecodable images and missing reports (a file, or
a member of the zip) are BadRecords. `validate` in the split file is our `validation`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from generalist.catalog.parts import PromptParts, generation_parts
from generalist.catalog.records import DATASETS, BadRecord, Dataset, Record
from generalist.catalog.task import KIND_METRICS, TASKS, Task
from generalist.sources.files import check_split, csv_row, read_csv, require_file

from .mimic_cxr_files import SPLIT_NAMES, MimicCxrFiles, table_names
from .mimic_cxr_files import parse_report as parse_report  # re-exported: the report format
from .mimic_cxr_reports import REPORTS_HELP

CONDITIONS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
# Med-PaLM M Table 2's MIMIC-CXR report metrics: clinical first, then the n-gram ones.
CLINICAL_METRICS = (
    *(
        f"chexbert_{a}_f1_{n}{p}"
        for p in ("", "_plus")
        for n in ("14", "5")
        for a in ("micro", "macro")
    ),
    "radgraph_f1",
    "radgraph_f1_simple",
    "radgraph_f1_complete",
)
YES_NO = ("yes", "no")
ADAPTER_VERSION = 2  # 2: reports from the MIMIC-CXR project (zip read in place), option reports
CHEXPERT_VALUES = {"1.0": "yes", "1": "yes", "0.0": "no", "0": "no", "-1.0": None, "-1": None}
_log = logging.getLogger(__name__)


def iter_reports(
    source: Path, split: str, reports: str | None = None
) -> Iterator[Record | BadRecord]:
    """One record per frontal image whose report has a FINDINGS section; `reports` is where
    the MIMIC-CXR reports are (found beside the JPGs when not given)."""
    check_split(split, SPLIT_NAMES.values(), "mimic_cxr")
    data = MimicCxrFiles(source, "mimic_cxr")
    data.open_reports(reports)  # no reports anywhere: an error now, before any record
    return _report_records(data, split)


def _report_records(data: MimicCxrFiles, split: str) -> Iterator[Record | BadRecord]:
    left_out = {"lateral": 0, "no findings": 0}
    for item in data.frontal_rows(split, left_out):
        if isinstance(item, BadRecord):
            yield item
            continue
        row, where, view = item
        report = data.report(row, where)
        if isinstance(report, BadRecord):
            yield report
            continue
        if not report["findings"]:
            left_out["no findings"] += 1
            continue
        image = data.image(row, where)
        if isinstance(image, BadRecord):
            yield image
            continue
        yield Record(
            id=row["dicom_id"],
            split=split,
            images=(image,),
            fields={**report, "view": view},
            meta=_meta(row, view),
        )
    data.close()  # the reports zip (a split stopped early closes it when collected)
    _log.warning("mimic_cxr/%s: left out %s", split, _counts(left_out))


def iter_conditions(source: Path, split: str) -> Iterator[Record | BadRecord]:
    """One record per (frontal image, condition) with a definite CheXpert label."""
    check_split(split, SPLIT_NAMES.values(), "mimic_cxr_conditions")
    data = MimicCxrFiles(source, "mimic_cxr_conditions")
    hint = "the CheXpert labels come with MIMIC-CXR-JPG"
    chexpert_csv = require_file(source, table_names("chexpert"), "mimic_cxr_conditions", hint)
    rows = read_csv(chexpert_csv, ("subject_id", "study_id", *CONDITIONS), "mimic_cxr_conditions")
    labels = {(r["subject_id"], r["study_id"]): (i, r) for i, r in enumerate(rows)}
    left_out = {"lateral": 0, "no CheXpert row": 0}
    for item in data.frontal_rows(split, left_out):
        if isinstance(item, BadRecord):
            yield item
            continue
        row, where, view = item
        found = labels.get((row["subject_id"], row["study_id"]))
        if found is None:
            left_out["no CheXpert row"] += 1
            continue
        index, label_row = found
        image: bytes | BadRecord | None = None
        for condition in CONDITIONS:
            value = label_row[condition].strip()
            if value not in CHEXPERT_VALUES and value != "":
                yield BadRecord(
                    f"mimic_cxr_conditions: {csv_row(chexpert_csv, index)}: {condition} is "
                    f"{value!r}, not one of 1.0, 0.0, -1.0 or blank"
                )
                continue
            label = CHEXPERT_VALUES.get(value)
            if label is None:
                continue  # uncertain (-1) or not mentioned (blank): no definite answer
            image = data.image(row, where) if image is None else image
            if isinstance(image, BadRecord):
                yield image
                break
            yield Record(
                id=f"{row['dicom_id']}:{condition}",
                split=split,
                images=(image,),
                fields={"condition": condition, "label": label, "view": view},
                meta=_meta(row, view),
            )
    _log.warning("mimic_cxr_conditions/%s: left out %s", split, _counts(left_out))


def _meta(row: Mapping[str, str], view: str) -> dict[str, Any]:
    keys = ("subject_id", "study_id", "dicom_id")
    return {**{k: row[k] for k in keys}, "view": view}


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{n} image(s): {why}" for why, n in counts.items())


_PUBLISHED = (
    "MIMIC-CXR-JPG csv files (split, metadata, chexpert) + files/p*/p*/s*/*.jpg; the reports "
    "from MIMIC-CXR (mimic-cxr-reports.zip)"
)
DATASETS.register(
    Dataset(
        name="mimic_cxr",
        iter_records=iter_reports,
        version=ADAPTER_VERSION,
        description="MIMIC-CXR frontal chest X-rays with the findings of their report",
        published_format=_PUBLISHED,
        homepage="https://physionet.org/content/mimic-cxr-jpg/",
        options={"reports": REPORTS_HELP},
    )
)
DATASETS.register(
    Dataset(
        name="mimic_cxr_conditions",
        iter_records=iter_conditions,
        version=ADAPTER_VERSION,
        description="MIMIC-CXR frontal chest X-rays x 5 conditions with a definite label",
        published_format=_PUBLISHED,
        homepage="https://physionet.org/content/mimic-cxr-jpg/",
        labels=YES_NO,
    )
)


def _indication(fields: Mapping[str, Any]) -> str:
    indication = str(fields.get("indication") or "").strip()
    return f"Indication: {indication}" if indication else ""


def condition_parts(fields: Mapping[str, Any]) -> PromptParts:
    """A yes/no question about one condition (binary classification per condition)."""
    return PromptParts(
        question=f"Is {str(fields['condition']).lower()} present in this chest X-ray?",
        target=str(fields["label"]),
        options=YES_NO,
    )


TASKS.register(
    Task(
        name="mimic_cxr_report",
        kind="report_generation",
        dataset="mimic_cxr",
        instructions=(
            "You are a helpful radiology assistant. Describe what you see in the chest X-ray: "
            "write the findings section of the radiology report.",
            "Write the findings of the radiology report for this chest X-ray.",
            "You are a radiologist. Report the findings of the chest radiograph.",
        ),
        parts=generation_parts(
            "Write the findings section of the report.", "findings", _indication
        ),
        shots=1,
        metrics=(*CLINICAL_METRICS, *KIND_METRICS["report_generation"]),
        primary_metric="bleu1",  # needs no scorer weights, so every leaderboard can rank it
        description="MIMIC-CXR findings generation from a frontal chest X-ray.",
    )
)
TASKS.register(
    Task(
        name="mimic_cxr_classification",
        kind="classification",
        dataset="mimic_cxr_conditions",
        instructions=(
            "You are a helpful radiology assistant. The following are questions about findings "
            "in chest X-rays. Identify if the condition is present in the image.",
            "Look at the chest X-ray and answer yes or no: is the condition present?",
        ),
        parts=condition_parts,
        labels=YES_NO,
        shots=1,
        metrics=("macro_auc", "macro_f1", "accuracy", "pooled_auc", "pooled_macro_f1"),
        extra={"macro_over": {"field": "condition", "values": CONDITIONS, "positive": "yes"}},
        description="MIMIC-CXR: 5 conditions (atelectasis, cardiomegaly, consolidation, edema, "
        "pleural effusion), a yes/no question each, scored per condition and macro-averaged.",
    )
)
