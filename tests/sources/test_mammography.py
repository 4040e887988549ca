"""VinDr-Mammo and CBIS-DDSM adapters on csv + real DICOM fixtures in the published layouts."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from generalist.catalog.records import BadRecord
from generalist.errors import DataError
from generalist.sources.dicom import dicom_to_array

VINDR_HEADER = [
    "study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
    "breast_birads", "breast_density", "split",
]  # fmt: skip
TRAIN_STUDY, VALID_STUDY = "c4ca4238a0b923820dcc509a6f75849b", "cfcd208495d565ef66e7dff9f98764da"
TEST_STUDY = "0d1c1f2ca3e8a7c9a0d1e2f3a4b5c6d7"
VINDR_ROWS = [  # (study, image, laterality, view, birads, split, photometric)
    (TRAIN_STUDY, "4e3a578fcbd3ad8b", "L", "CC", "BI-RADS 2", "training", "MONOCHROME2"),
    (TRAIN_STUDY, "dac39351b0f3a8c6", "R", "MLO", "BI-RADS 4", "training", "MONOCHROME1"),
    (VALID_STUDY, "1b3a9c0e7f2d4a55", "L", "MLO", "BI-RADS 1", "training", "MONOCHROME2"),
    (TEST_STUDY, "9f8e7d6c5b4a3210", "R", "CC", "BI-RADS 5", "test", "MONOCHROME2"),
]


def pixels(seed: int) -> np.ndarray:
    """12-bit pixels that differ per image (min-max scaling would equalise a plain offset)."""
    return np.random.default_rng(seed).integers(0, 4096, size=(16, 12), dtype=np.uint16)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


@pytest.fixture
def vindr(tmp_path, helpers) -> Path:
    root = tmp_path / "vindr-mammo"
    rows = []
    for n, (study, image, side, view, birads, split, photometric) in enumerate(VINDR_ROWS):
        rows.append(
            [study, f"series{n}", image, side, view, "16", "12", birads, "DENSITY C", split]
        )
        path = root / "images" / study / f"{image}.dicom"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(helpers.dicom_bytes(pixels(n), photometric))
    write_csv(root / "breast-level_annotations.csv", VINDR_HEADER, rows)
    return root


def decoded(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as image:
        return np.asarray(image)


def test_vindr_records_field_by_field(vindr, helpers) -> None:
    train = helpers.good(helpers.records_of("vindr_mammo", vindr, "train"))
    assert [r.id for r in train] == ["4e3a578fcbd3ad8b", "dac39351b0f3a8c6"]
    assert dict(train[1].fields) == {
        "label": "BI-RADS 4",
        "view": "MLO",
        "laterality": "right",
        "density": "DENSITY C",
    }
    assert dict(train[0].meta) == {"study_id": TRAIN_STUDY, "image_id": "4e3a578fcbd3ad8b"}
    first = vindr / "images" / TRAIN_STUDY / "4e3a578fcbd3ad8b.dicom"
    assert np.array_equal(decoded(train[0].images[0]), dicom_to_array(first))
    # MONOCHROME1 comes out inverted: the brightest stored pixel is black.
    second = decoded(train[1].images[0])
    assert second.flat[np.argmax(pixels(1))] == 0
    (valid,) = helpers.good(helpers.records_of("vindr_mammo", vindr, "validation"))
    (test,) = helpers.good(helpers.records_of("vindr_mammo", vindr, "test"))
    assert (valid.fields["label"], test.fields["label"]) == ("BI-RADS 1", "BI-RADS 5")


def test_vindr_bad_rows(vindr, helpers) -> None:
    table = vindr / "breast-level_annotations.csv"
    text = table.read_text().replace("BI-RADS 2", "BI-RADS 0").replace("training", "train", 1)
    table.write_text(text.replace("BI-RADS 4", "BI-RADS 0"))
    (vindr / "images" / VALID_STUDY / "1b3a9c0e7f2d4a55.dicom").write_bytes(b"garbage")
    train = helpers.records_of("vindr_mammo", vindr, "train")
    assert [str(b).split(": ", 1)[1] for b in train] == [
        f"{table} line 2: split 'train' is not training or test",
        f"{table} line 3: breast_birads 'BI-RADS 0' is not one of "
        "['BI-RADS 1', 'BI-RADS 2', 'BI-RADS 3', 'BI-RADS 4', 'BI-RADS 5']",
    ]
    (bad,) = helpers.records_of("vindr_mammo", vindr, "validation")
    assert "line 4: " in str(bad) and "1b3a9c0e7f2d4a55.dicom: not a readable DICOM" in str(bad)
    (vindr / "images" / TEST_STUDY / "9f8e7d6c5b4a3210.dicom").unlink()
    (bad,) = helpers.records_of("vindr_mammo", vindr, "test")
    assert "line 5: image " in str(bad) and "9f8e7d6c5b4a3210.dicom is missing" in str(bad)


def test_vindr_missing_file_and_columns(tmp_path, helpers) -> None:
    with pytest.raises(DataError, match=r"missing .*breast-level_annotations\.csv; --source"):
        helpers.records_of("vindr_mammo", tmp_path, "train")
    write_csv(tmp_path / "breast-level_annotations.csv", VINDR_HEADER[:-1], [])
    with pytest.raises(DataError, match=r"annotations\.csv lacks column\(s\) \['split'\]"):
        helpers.records_of("vindr_mammo", tmp_path, "train")


MASS_HEADER = [
    "patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
    "abnormality type", "mass shape", "mass margins", "assessment", "pathology", "subtlety",
    "image file path", "cropped image file path", "ROI mask file path",
]  # fmt: skip
CALC_HEADER = [
    "patient_id", "breast density", "left or right breast", "image view", "abnormality id",
    "abnormality type", "calc type", "calc distribution", "assessment", "pathology",
    "subtlety", "image file path", "cropped image file path", "ROI mask file path",
]  # fmt: skip
UID = "1.3.6.1.4.1.9590.100.1.2"


def csv_path(folder: str, n: int) -> str:
    """An image path as the csv writes it (TCIA uids, 000000.dcm)."""
    return f"{folder}/{UID}.{n}1/{UID}.{n}2/000000.dcm"


def nbia_path(root: Path, folder: str) -> Path:
    """Where the NBIA Data Retriever puts the full mammogram of `folder`."""
    return (
        root / "CBIS-DDSM" / folder / "07-20-2016-DDSM-NA-74994" / "1.000000-full-24515" / "1-1.dcm"
    )


@pytest.fixture
def cbis(tmp_path, helpers) -> Path:
    root = tmp_path / "cbis-ddsm"
    # (published split, patient, side, view, abnormality id, pathology); P_00008 -> validation
    mass = [
        ("Training", "P_00001", "LEFT", "CC", "1", "MALIGNANT"),
        ("Training", "P_00001", "LEFT", "CC", "2", "BENIGN_WITHOUT_CALLBACK"),
        ("Training", "P_00008", "RIGHT", "MLO", "1", "BENIGN"),
        ("Test", "P_00016", "LEFT", "CC", "1", "BENIGN"),
    ]
    for kind, header, rows in (("mass", MASS_HEADER, mass), ("calc", CALC_HEADER, mass)):
        prefix = "Mass" if kind == "mass" else "Calc"
        tables: dict[str, list[list[str]]] = {"Training": [], "Test": []}
        for n, (split, patient, side, view, abnormality, pathology) in enumerate(rows):
            folder = f"{prefix}-{split}_{patient}_{side}_{view}"
            image = csv_path(folder, n)
            descriptors = (
                ["OVAL", "CIRCUMSCRIBED"] if kind == "mass" else ["PLEOMORPHIC", "CLUSTERED"]
            )
            tables[split].append(
                [patient, "2", side, view, abnormality, kind, *descriptors, "4", pathology, "3",
                 image, f"{folder}_{abnormality}/{UID}.9/{UID}.8/000000.dcm\n", ""]
            )  # fmt: skip
            # The test split's image sits exactly at its csv path; the others in NBIA layout.
            path = root / image if split == "Test" else nbia_path(root, folder)
            if not path.exists():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(helpers.dicom_bytes(pixels(100 * len(kind) + n)))
        for split, table in tables.items():
            name = "train" if split == "Training" else "test"
            write_csv(root / f"{kind}_case_description_{name}_set.csv", header, table)
    return root


def test_cbis_mass_records_and_path_resolution(cbis, helpers) -> None:
    train = helpers.good(helpers.records_of("cbis_ddsm_mass", cbis, "train"))
    assert [(r.id, r.fields["label"]) for r in train] == [
        ("Mass-Training_P_00001_LEFT_CC_1", "malignant"),
        ("Mass-Training_P_00001_LEFT_CC_2", "benign without callback"),
    ]
    assert train[0].images == train[1].images  # one mammogram, two abnormalities
    assert dict(train[0].fields) == {
        "label": "malignant",
        "view": "CC",
        "laterality": "left",
        "density": "2",
        "assessment": "4",
        "subtlety": "3",
        "mass_shape": "OVAL",
        "mass_margins": "CIRCUMSCRIBED",
    }
    nbia = nbia_path(cbis, "Mass-Training_P_00001_LEFT_CC")
    assert train[0].meta["image_file"] == str(nbia.relative_to(cbis))
    assert np.array_equal(decoded(train[0].images[0]), dicom_to_array(nbia))
    (valid,) = helpers.good(helpers.records_of("cbis_ddsm_mass", cbis, "validation"))
    assert (valid.id, valid.fields["label"]) == ("Mass-Training_P_00008_RIGHT_MLO_1", "benign")
    (test,) = helpers.good(helpers.records_of("cbis_ddsm_mass", cbis, "test"))
    assert test.meta["image_file"] == csv_path("Mass-Test_P_00016_LEFT_CC", 3)


def test_cbis_calc_reads_its_own_columns(cbis, helpers) -> None:
    (test,) = helpers.good(helpers.records_of("cbis_ddsm_calc", cbis, "test"))
    assert test.id == "Calc-Test_P_00016_LEFT_CC_1"
    assert (test.fields["density"], test.fields["calc_type"]) == ("2", "PLEOMORPHIC")
    assert test.fields["calc_distribution"] == "CLUSTERED" and "mass_shape" not in test.fields


def test_cbis_bad_rows(cbis, helpers) -> None:
    folder = "Mass-Training_P_00001_LEFT_CC"
    extra = nbia_path(cbis, folder).parent / "1-2.dcm"
    extra.write_bytes(b"x")
    table = cbis / "mass_case_description_train_set.csv"
    table.write_text(table.read_text().replace(",BENIGN,", ",UNKNOWN,"))
    items = helpers.records_of("cbis_ddsm_mass", cbis, "train")
    assert all(isinstance(i, BadRecord) for i in items)
    assert f"line 2: image '{csv_path(folder, 0)}': folder '{folder}' holds 2 .dcm" in str(items[0])
    (bad,) = helpers.records_of("cbis_ddsm_mass", cbis, "validation")
    assert "line 4: pathology 'UNKNOWN' is not one of BENIGN, BENIGN_WITHOUT_CALLBACK" in str(bad)
    (cbis / csv_path("Mass-Test_P_00016_LEFT_CC", 3)).unlink()
    (bad,) = helpers.records_of("cbis_ddsm_mass", cbis, "test")
    assert "line 2: image " in str(bad) and "no folder 'Mass-Test_P_00016_LEFT_CC' with a" in str(
        bad
    )


def test_cbis_missing_file_and_columns(cbis, helpers) -> None:
    (cbis / "calc_case_description_test_set.csv").unlink()
    with pytest.raises(DataError, match=r"missing .*calc_case_description_test_set\.csv or"):
        helpers.records_of("cbis_ddsm_calc", cbis, "test")
    write_csv(cbis / "mass_case_description_test_set.csv", MASS_HEADER[:-3], [])
    with pytest.raises(DataError, match=r"test_set\.csv lacks column\(s\) \['image file path'\]"):
        helpers.records_of("cbis_ddsm_mass", cbis, "test")


@pytest.mark.parametrize("dataset", ["vindr_mammo", "cbis_ddsm_mass", "cbis_ddsm_calc"])
def test_shard_round_trip_and_render(dataset, vindr, cbis, tmp_path, helpers) -> None:
    source = vindr if dataset == "vindr_mammo" else cbis
    back = helpers.round_trip(
        dataset, dataset, source, tmp_path / "shards", ["train", "validation", "test"]
    )
    assert [len(back[s]) for s in ("train", "validation", "test")] == [2, 1, 1]
