"""MIMIC-CXR-JPG adapters on a fixture laid out like the PhysioNet download."""

from __future__ import annotations

import csv
import gzip
import logging
from pathlib import Path

import pytest
from generalist.tasks.mimic_cxr import parse_report

from generalist.catalog.records import BadRecord
from generalist.errors import DataError

REPORT = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___F with new onset ascites  // eval for infection

 TECHNIQUE:  Chest PA and lateral

 COMPARISON:  None.

 FINDINGS:

 There is no focal consolidation, pleural effusion or pneumothorax.  Bilateral
 nodular opacities that most likely represent nipple shadows. The
 cardiomediastinal silhouette is normal.

 IMPRESSION:

 No acute cardiopulmonary process.
"""
REPORT_2 = """                                 FINAL REPORT
 HISTORY:  Shortness of breath.

 FINDINGS AND IMPRESSION:  PA and lateral views: mild pulmonary edema at 10:15.
"""
REPORT_NO_FINDINGS = """                                 FINAL REPORT
 WET READ: ___ ___ 2:15 PM
 IMPRESSION:  Stable appearance of the chest.
"""
# (subject, study, dicom, split, view, report)
IMAGES = [
    ("10000032", "50414267", "02aa804e-bde0afdd", "train", "PA", REPORT),
    ("10000032", "50414267", "174413ec-4ec4c1f7", "train", "LATERAL", REPORT),
    ("10000032", "53189527", "2a2277a9-b0ded155", "train", "AP", REPORT_2),
    ("10000764", "57375967", "096052b7-d256dc40", "validate", "PA", REPORT),
    ("11000011", "51029426", "8959e402-2175d68d", "test", "AP", REPORT_NO_FINDINGS),
]
CONDITION_COLUMNS = [
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum",
    "Fracture", "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion",
    "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices",
]  # fmt: skip
# study -> Atelectasis, Cardiomegaly, Consolidation, Edema, Pleural Effusion
LABELS = {
    "50414267": ("1.0", "-1.0", "", "0.0", "1.0"),
    "53189527": ("", "", "", "1.0", ""),
    "57375967": ("0.0", "0.0", "", "", ""),
    "51029426": ("1.0", "", "", "", ""),
}


def write_csv_gz(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with gzip.open(path, "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def chexpert_row(subject: str, study: str, five: tuple[str, ...]) -> list[str]:
    values = dict(zip(("Atelectasis", "Cardiomegaly", "Consolidation", "Edema"), five))
    values["Pleural Effusion"] = five[4]
    return [subject, study, *(values.get(c, "") for c in CONDITION_COLUMNS)]


@pytest.fixture
def mimic(tmp_path, helpers) -> Path:
    root = tmp_path / "mimic-cxr-jpg"
    root.mkdir()
    write_csv_gz(
        root / "mimic-cxr-2.0.0-split.csv.gz",
        ["dicom_id", "study_id", "subject_id", "split"],
        [[d, st, su, sp] for su, st, d, sp, _, _ in IMAGES],
    )
    write_csv_gz(
        root / "mimic-cxr-2.0.0-metadata.csv.gz",
        ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription",
         "ViewPosition", "Rows", "Columns", "StudyDate", "StudyTime",
         "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
         "PatientOrientationCodeSequence_CodeMeaning"],
        [[d, su, st, "CHEST (PA AND LAT)", v, "8", "12", "21800506", "213014.531",
          "CHEST (PA AND LAT)", "postero-anterior", "Erect"] for su, st, d, _, v, _ in IMAGES],
    )  # fmt: skip
    write_csv_gz(
        root / "mimic-cxr-2.0.0-chexpert.csv.gz",
        ["subject_id", "study_id", *CONDITION_COLUMNS],
        [
            chexpert_row(su, st, LABELS[st])
            for su, st in dict.fromkeys((i[0], i[1]) for i in IMAGES)
        ],
    )
    for n, (subject, study, dicom, _, _, report) in enumerate(IMAGES):
        patient = root / "files" / f"p{subject[:2]}" / f"p{subject}"
        (patient / f"s{study}").mkdir(parents=True, exist_ok=True)
        (patient / f"s{study}" / f"{dicom}.jpg").write_bytes(helpers.image_bytes(n, fmt="JPEG"))
        (patient / f"s{study}.txt").write_text(report)
    return root


def image_path(root: Path, n: int) -> Path:
    subject, study, dicom = IMAGES[n][:3]
    return root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}" / f"{dicom}.jpg"


def test_parse_report_sections() -> None:
    assert parse_report(REPORT) == {
        "findings": "There is no focal consolidation, pleural effusion or pneumothorax. "
        "Bilateral nodular opacities that most likely represent nipple shadows. "
        "The cardiomediastinal silhouette is normal.",
        "impression": "No acute cardiopulmonary process.",
        "indication": "___F with new onset ascites // eval for infection",
    }
    assert parse_report(REPORT_2) == {
        "findings": "PA and lateral views: mild pulmonary edema at 10:15.",
        "impression": "",
        "indication": "Shortness of breath.",
    }
    assert parse_report(REPORT_NO_FINDINGS)["findings"] == ""


def test_report_records_frontal_with_findings(mimic, helpers, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        train = helpers.good(helpers.records_of("mimic_cxr", mimic, "train"))
    assert [r.id for r in train] == ["02aa804e-bde0afdd", "2a2277a9-b0ded155"]
    assert dict(train[0].fields) == {**parse_report(REPORT), "view": "PA"}
    assert train[1].fields["view"] == "AP"
    assert dict(train[0].meta) == {
        "subject_id": "10000032",
        "study_id": "50414267",
        "dicom_id": "02aa804e-bde0afdd",
        "view": "PA",
    }
    assert train[0].images == (image_path(mimic, 0).read_bytes(),)
    assert "mimic_cxr/train: left out 1 image(s): lateral, 0 image(s): no findings" in caplog.text
    (valid,) = helpers.good(helpers.records_of("mimic_cxr", mimic, "validation"))
    assert (valid.id, valid.split) == ("096052b7-d256dc40", "validation")
    with caplog.at_level(logging.WARNING):
        assert helpers.records_of("mimic_cxr", mimic, "test") == []
    assert "mimic_cxr/test: left out 0 image(s): lateral, 1 image(s): no findings" in caplog.text


def test_condition_records_definite_labels_only(mimic, helpers) -> None:
    train = helpers.good(helpers.records_of("mimic_cxr_conditions", mimic, "train"))
    assert [(r.id, r.fields["label"]) for r in train] == [
        ("02aa804e-bde0afdd:Atelectasis", "yes"),
        ("02aa804e-bde0afdd:Edema", "no"),
        ("02aa804e-bde0afdd:Pleural Effusion", "yes"),
        ("2a2277a9-b0ded155:Edema", "yes"),
    ]
    assert dict(train[1].fields) == {"condition": "Edema", "label": "no", "view": "PA"}
    valid = helpers.good(helpers.records_of("mimic_cxr_conditions", mimic, "validation"))
    assert [r.id.split(":")[1] for r in valid] == ["Atelectasis", "Cardiomegaly"]


def test_missing_file_and_columns(mimic, helpers) -> None:
    (mimic / "mimic-cxr-2.0.0-chexpert.csv.gz").unlink()
    with pytest.raises(DataError, match=r"missing .*mimic-cxr-2\.0\.0-chexpert\.csv\.gz"):
        helpers.records_of("mimic_cxr_conditions", mimic, "train")
    write_csv_gz(mimic / "mimic-cxr-2.0.0-metadata.csv.gz", ["dicom_id", "View"], [["x", "PA"]])
    with pytest.raises(DataError, match=r"metadata\.csv\.gz lacks column\(s\) \['ViewPosition'\]"):
        helpers.records_of("mimic_cxr", mimic, "train")
    (mimic / "mimic-cxr-2.0.0-split.csv.gz").unlink()
    with pytest.raises(DataError, match=r"missing .*mimic-cxr-2\.0\.0-split\.csv\.gz or "):
        helpers.records_of("mimic_cxr", mimic, "train")


def test_bad_rows(mimic, helpers) -> None:
    image_path(mimic, 0).unlink()
    image_path(mimic, 2).write_bytes(b"\xff\xd8\xff truncated jpeg")
    items = helpers.records_of("mimic_cxr", mimic, "train")
    assert all(isinstance(i, BadRecord) for i in items)
    assert "split.csv.gz line 2: image " in str(items[0]) and "is missing" in str(items[0])
    assert "split.csv.gz line 4: " in str(items[1]) and "does not decode" in str(items[1])
    report = mimic / "files" / "p10" / "p10000764" / "s57375967.txt"
    report.unlink()
    (bad,) = helpers.records_of("mimic_cxr", mimic, "validation")
    assert "line 5: report " in str(bad) and "s57375967.txt is missing" in str(bad)


def test_label_outside_chexpert_values(mimic, helpers) -> None:
    rows = [chexpert_row("10000032", "50414267", ("2.0", "", "", "", ""))]
    write_csv_gz(
        mimic / "mimic-cxr-2.0.0-chexpert.csv.gz",
        ["subject_id", "study_id", *CONDITION_COLUMNS],
        rows,
    )
    (bad,) = helpers.records_of("mimic_cxr_conditions", mimic, "train")
    assert isinstance(bad, BadRecord)
    assert "chexpert.csv.gz line 2: Atelectasis is '2.0', not one of 1.0, 0.0, -1.0" in str(bad)


def test_unknown_split_value(mimic, helpers) -> None:
    write_csv_gz(
        mimic / "mimic-cxr-2.0.0-split.csv.gz",
        ["dicom_id", "study_id", "subject_id", "split"],
        [["02aa804e-bde0afdd", "50414267", "10000032", "dev"]],
    )
    (bad,) = helpers.records_of("mimic_cxr", mimic, "train")
    assert "split.csv.gz line 2: split 'dev' is not one of ['train', 'validate', 'test']" in str(
        bad
    )


@pytest.mark.parametrize(
    ("dataset", "task"),
    [("mimic_cxr", "mimic_cxr_report"), ("mimic_cxr_conditions", "mimic_cxr_classification")],
)
def test_shard_round_trip_and_render(dataset, task, mimic, tmp_path, helpers) -> None:
    back = helpers.round_trip(dataset, task, mimic, tmp_path / "shards", ["train", "validation"])
    assert len(back["validation"]) == (1 if dataset == "mimic_cxr" else 2)
