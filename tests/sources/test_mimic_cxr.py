"""MIMIC-CXR-JPG adapters on a fixture laid out like the PhysioNet download."""

from __future__ import annotations

import csv
import gzip
import logging
import zipfile
from pathlib import Path

import pytest
from generalist.tasks.mimic_cxr import parse_report

from generalist.catalog.records import DATASETS, BadRecord
from generalist.errors import ConfigError, DataError

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


def take_reports(jpg: Path) -> dict[str, str]:
    """Remove the reports from the JPG tree: {member (files/pXX/pSUBJECT/sSTUDY.txt): text}."""
    reports = {}
    for path in sorted((jpg / "files").glob("p*/p*/s*.txt")):
        reports[path.relative_to(jpg).as_posix()] = path.read_text()
        path.unlink()
    return reports


def write_reports_zip(project: Path, reports: dict[str, str]) -> Path:
    """<project>/mimic-cxr-reports.zip as MIMIC-CXR publishes it (members files/...)."""
    project.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(project / "mimic-cxr-reports.zip", "w") as archive:
        for member, text in reports.items():
            archive.writestr(member, text)
    return project


@pytest.fixture
def physionet(mimic, tmp_path) -> Path:
    """The two projects as `wget -r` leaves them: physionet.org/files/mimic-cxr-jpg/2.1.0 and
    physionet.org/files/mimic-cxr/2.0.0/mimic-cxr-reports.zip."""
    files = tmp_path / "physionet.org" / "files"
    jpg = files / "mimic-cxr-jpg" / "2.1.0"
    jpg.parent.mkdir(parents=True)
    mimic.rename(jpg)
    write_reports_zip(files / "mimic-cxr" / "2.0.0", take_reports(jpg))
    return jpg


def test_reports_found_beside_the_jpgs_and_read_from_the_zip(physionet, mimic, helpers) -> None:
    assert not list(physionet.rglob("*.txt"))  # no report left in the JPG download
    train = helpers.good(helpers.records_of("mimic_cxr", physionet, "train"))
    assert [r.id for r in train] == ["02aa804e-bde0afdd", "2a2277a9-b0ded155"]
    assert dict(train[0].fields) == {**parse_report(REPORT), "view": "PA"}
    assert dict(train[1].fields) == {**parse_report(REPORT_2), "view": "AP"}
    reports = physionet.parent.parent / "mimic-cxr"
    assert not list(reports.rglob("*.txt"))  # read in place, not unzipped
    # a newer MIMIC-CXR version beside it is preferred
    newer = reports / "2.1.0"
    newer.mkdir()
    with zipfile.ZipFile(newer / "mimic-cxr-reports.zip", "w") as archive:
        archive.writestr("files/p10/p10000032/s50414267.txt", REPORT.replace("normal.", "wide."))
    first = helpers.records_of("mimic_cxr", physionet, "train")[0]  # its zip has this one only
    assert first.fields["findings"].endswith("The cardiomediastinal silhouette is wide.")
    conditions = helpers.good(helpers.records_of("mimic_cxr_conditions", physionet, "train"))
    assert len(conditions) == 4  # the labels need no reports


def test_reports_option_takes_the_zip_or_an_unzipped_tree(mimic, tmp_path, helpers) -> None:
    reports = take_reports(mimic)
    elsewhere = write_reports_zip(tmp_path / "elsewhere" / "2.0.0", reports)
    dataset = DATASETS.get("mimic_cxr")
    for option in (elsewhere, elsewhere / "mimic-cxr-reports.zip"):
        valid = helpers.good(list(dataset.records(mimic, "validation", {"reports": str(option)})))
        assert [r.fields["findings"] for r in valid] == [parse_report(REPORT)["findings"]]
    for tree in (tmp_path / "tree", tmp_path / "guide" / "mimic-cxr-reports"):
        for member in reports:
            (tree / member).parent.mkdir(parents=True, exist_ok=True)
            (tree / member).write_text(REPORT_2)
    for option in (tmp_path / "tree", tmp_path / "guide"):
        valid = helpers.good(list(dataset.records(mimic, "validation", {"reports": str(option)})))
        assert valid[0].fields["findings"] == parse_report(REPORT_2)["findings"]


def test_shard_cli_reports_option_into_the_manifest(mimic, tmp_path, capsys) -> None:
    from generalist import cli
    from generalist.shards.manifest import load_manifest

    reports = write_reports_zip(tmp_path / "reports", take_reports(mimic))
    out = tmp_path / "shards"
    argv = ["shard", "mimic_cxr", "--source", str(mimic), "--out", str(out), "--no-progress"]
    assert cli.main([*argv, "--splits", "train", "--option", f"reports={reports}"]) == 0
    manifest = load_manifest(out, "mimic_cxr")
    assert manifest["options"] == {"reports": str(reports)}
    assert manifest["splits"]["train"]["count"] == 2
    assert cli.main([*argv, "--splits", "train"]) == 2  # not beside the JPGs: nowhere to find
    assert "no MIMIC-CXR reports found" in capsys.readouterr().err


def test_zip_member_missing_is_a_bad_record_naming_zip_and_member(mimic, tmp_path) -> None:
    reports = take_reports(mimic)
    del reports["files/p10/p10000764/s57375967.txt"]
    archive = write_reports_zip(tmp_path / "reports", reports) / "mimic-cxr-reports.zip"
    options = {"reports": str(archive)}
    (bad,) = DATASETS.get("mimic_cxr").records(mimic, "validation", options)
    assert isinstance(bad, BadRecord)
    assert str(bad) == (
        f"mimic_cxr: {mimic / 'mimic-cxr-2.0.0-split.csv.gz'} line 5: report: "
        f"files/p10/p10000764/s57375967.txt is not in {archive}"
    )


def test_no_reports_and_bad_report_locations_are_named(mimic, tmp_path) -> None:
    dataset = DATASETS.get("mimic_cxr")
    reports = take_reports(mimic)
    with pytest.raises(DataError) as err:
        dataset.records(mimic, "train")  # raised at the call, before any record
    message = str(err.value)
    assert message.startswith("mimic_cxr: no MIMIC-CXR reports found: looked for ")
    assert f"in {mimic.resolve()};" in message and "--option reports=PATH" in message
    write_reports_zip(mimic.parent / "mimic-cxr", reports)  # beside mimic-cxr-jpg/, unversioned
    assert len(list(dataset.records(mimic, "train"))) == 2
    (mimic.parent / "mimic-cxr" / "mimic-cxr-reports.zip").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"option reports=.*empty: found neither .*empty/mimic-c"):
        dataset.records(mimic, "train", {"reports": str(empty)})
    fake = tmp_path / "fake.zip"
    fake.write_text("not a zip")
    with pytest.raises(DataError, match=r"fake\.zip is not a readable zip archive"):
        dataset.records(mimic, "train", {"reports": str(fake)})
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as archive:
        archive.writestr("notes/readme.txt", "not the reports")
    with pytest.raises(DataError, match=r"other\.zip holds none of the reports of the first stu"):
        dataset.records(mimic, "train", {"reports": str(other)})
    with pytest.raises(ConfigError, match=r"'mimic_cxr_conditions' takes no options"):
        DATASETS.get("mimic_cxr_conditions").records(mimic, "train", {"reports": str(other)})
