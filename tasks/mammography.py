"""Mammography: VinDr-Mammo (breast-level BI-RADS 1-5) and CBIS-DDSM (mass, calcification).

Publications followed: VinDr-Mammo 1.0.0 (https://physionet.org/content/vindr-mammo/1.0.0/) and
CBIS-DDSM (https://www.cancerimagingarchive.net/collection/cbis-ddsm/, csv + NBIA download).
Both are published as csv annotations plus DICOM images. Fields: label, view, laterality
(and, for CBIS-DDSM, the abnormality's published descriptors).

VinDr-Mammo (PhysioNet): breast-level_annotations.csv (study_id, series_id, image_id,
laterality L/R, view_position, breast_birads "BI-RADS 1".., breast_density, split
training/test) + images/<study_id>/<image_id>.dicom. One record per image, id image_id.
CBIS-DDSM (TCIA): {mass,calc}_case_description_{train,test}_set.csv + the DICOM tree. One
record per abnormality, id "<image folder>_<abnormality id>" (Mass-Training_P_00001_LEFT_CC_1),
with the FULL mammogram as its image (Med-PaLM M classifies the whole image; crops would need
telling crop from mask apart, which the download does not do reliably). The csv's image paths
(<folder>/<uid>/<uid>/000000.dcm) rarely match a downloaded tree (NBIA writes
<folder>/<date-uid>/<series-uid>/1-1.dcm): the adapter tries the csv path under --source (and
--source/CBIS-DDSM), then takes the path's first folder name, finds that folder anywhere up to
two levels below --source and uses the one .dcm inside it (none or several -> BadRecord).
Neither has a validation split: 10% of the training patients (VinDr: studies; CBIS-DDSM:
patient_id, the same patients for mass and calc), by a hash, form it. DICOMs become 8-bit
PNGs (generalist.sources.dicom), longest side at most 2048 px (the writer resizes to 224 by
default).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from generalist.catalog.parts import classification_parts
from generalist.catalog.records import DATASETS, BadRecord, Dataset, IterRecords, Record
from generalist.catalog.task import TASKS, Task
from generalist.errors import DataError
from generalist.sources.dicom import dicom_to_png
from generalist.sources.files import check_split, csv_row, patient_split, read_csv, require_file

BIRADS = ("BI-RADS 1", "BI-RADS 2", "BI-RADS 3", "BI-RADS 4", "BI-RADS 5")
PATHOLOGY = ("benign", "benign without callback", "malignant")
ADAPTER_VERSION = 1
VALIDATION_FRACTION = 0.1
MAX_SIDE = 2048
SIDES = {"L": "left", "R": "right", "LEFT": "left", "RIGHT": "right"}
VINDR_COLUMNS = ("study_id", "image_id", "laterality", "view_position", "breast_birads")
VINDR_COLUMNS += ("breast_density", "split")
# CBIS-DDSM column -> our field; the calc csv spells density "breast density".
CBIS_COLUMNS = {
    "mass": {"mass shape": "mass_shape", "mass margins": "mass_margins"},
    "calc": {"calc type": "calc_type", "calc distribution": "calc_distribution"},
}
CBIS_COMMON = ("patient_id", "left or right breast", "image view", "abnormality id")
CBIS_COMMON += ("assessment", "pathology", "subtlety", "image file path")


def _split(published: str, patient: str, salt: str) -> str:
    """train csv rows -> train or (10% of patients) validation; test stays test."""
    if published == "test":
        return "test"
    return patient_split(patient, salt, VALIDATION_FRACTION)


def _png(path: Path, where: str) -> bytes | BadRecord:
    if not path.is_file():
        return BadRecord(f"{where}: image {path} is missing")
    try:
        return dicom_to_png(path, where=f"{where}: {path}", max_side=MAX_SIDE)
    except DataError as err:
        return BadRecord(str(err))


def iter_vindr(source: Path, split: str) -> Iterator[Record | BadRecord]:
    """One record per image with its breast-level BI-RADS."""
    check_split(split, ("train", "validation", "test"), "vindr_mammo")
    hint = "--source is the VinDr-Mammo root (breast-level_annotations.csv, images/)"
    table = require_file(source, ("breast-level_annotations.csv",), "vindr_mammo", hint)
    for index, row in enumerate(read_csv(table, VINDR_COLUMNS, "vindr_mammo")):
        where = f"vindr_mammo: {csv_row(table, index)}"
        published = {"training": "train", "test": "test"}.get(row["split"].strip())
        if published is None:
            if split == "train":  # reported once, not once per split
                yield BadRecord(f"{where}: split {row['split']!r} is not training or test")
            continue
        if _split(published, row["study_id"], "vindr_mammo") != split:
            continue
        label, side = row["breast_birads"].strip(), row["laterality"].strip().upper()
        if label not in BIRADS:
            yield BadRecord(f"{where}: breast_birads {label!r} is not one of {list(BIRADS)}")
            continue
        image = _png(Path(source) / "images" / row["study_id"] / f"{row['image_id']}.dicom", where)
        if isinstance(image, BadRecord):
            yield image
            continue
        yield Record(
            id=row["image_id"],
            split=split,
            images=(image,),
            fields={
                "label": label,
                "view": row["view_position"].strip(),
                "laterality": SIDES.get(side, side.lower()),
                "density": row["breast_density"].strip(),
            },
            meta={k: row[k] for k in ("study_id", "image_id")},
        )


class _DicomTree:
    """Finds a CBIS-DDSM csv image path in a downloaded tree (see the module docstring)."""

    def __init__(self, source: Path) -> None:
        self.source = Path(source)
        self._folders: dict[str, list[Path]] | None = None

    def folders(self) -> dict[str, list[Path]]:
        if self._folders is None:  # built on first need: a scan of two directory levels
            found: dict[str, list[Path]] = {}
            for parent in (self.source, *sorted(p for p in self.source.iterdir() if p.is_dir())):
                for child in sorted(parent.iterdir()):
                    if child.is_dir():
                        found.setdefault(child.name, []).append(child)
            self._folders = found
        return self._folders

    def resolve(self, csv_path: str) -> Path | str:
        """The DICOM file of a csv path, or why there is none."""
        relative = csv_path.strip().replace("\\", "/")
        for base in (self.source, self.source / "CBIS-DDSM"):
            if (base / relative).is_file():
                return base / relative
        folder = relative.split("/")[0]
        dicoms = sorted(f for d in self.folders().get(folder, []) for f in d.rglob("*.dcm"))
        if not dicoms:
            return f"image {relative!r}: no folder {folder!r} with a .dcm file under {self.source}"
        if len(dicoms) > 1:
            return f"image {relative!r}: folder {folder!r} holds {len(dicoms)} .dcm files, not one"
        return dicoms[0]


def make_iter_cbis(kind: str) -> IterRecords:
    """The adapter of CBIS-DDSM `kind` ("mass" or "calc")."""
    name = f"cbis_ddsm_{kind}"

    def iter_records(source: Path, split: str) -> Iterator[Record | BadRecord]:
        check_split(split, ("train", "validation", "test"), name)
        published = "test" if split == "test" else "train"
        file = f"{kind}_case_description_{published}_set.csv"
        hint = "--source is the folder with the CBIS-DDSM csv files and the DICOM tree"
        table = require_file(source, (file, f"csv/{file}"), name, hint)
        rows = read_csv(table, (*CBIS_COMMON, *CBIS_COLUMNS[kind]), name)
        tree, cache = _DicomTree(source), {}
        for index, row in enumerate(rows):
            where = f"{name}: {csv_row(table, index)}"
            if _split(published, row["patient_id"], "cbis_ddsm") != split:
                continue
            label = row["pathology"].strip().lower().replace("_", " ")
            if label not in PATHOLOGY:
                yield BadRecord(
                    f"{where}: pathology {row['pathology']!r} is not one of "
                    f"BENIGN, BENIGN_WITHOUT_CALLBACK, MALIGNANT"
                )
                continue
            path = tree.resolve(row["image file path"])
            if isinstance(path, str):
                yield BadRecord(f"{where}: {path}")
                continue
            if path not in cache:  # several abnormalities share one mammogram
                cache = {path: _png(path, where)}
            image = cache[path]
            if isinstance(image, BadRecord):
                yield image
                continue
            folder = row["image file path"].strip().split("/")[0]
            yield Record(
                id=f"{folder}_{row['abnormality id'].strip()}",
                split=split,
                images=(image,),
                fields=_cbis_fields(row, kind, label),
                meta={"patient_id": row["patient_id"], "image_file": str(path.relative_to(source))},
            )

    return iter_records


def _cbis_fields(row: Mapping[str, str], kind: str, label: str) -> dict[str, Any]:
    side = row["left or right breast"].strip().upper()
    fields = {
        "label": label,
        "view": row["image view"].strip(),
        "laterality": SIDES.get(side, side.lower()),
        "density": (row.get("breast_density") or row.get("breast density") or "").strip(),
        "assessment": row["assessment"].strip(),
        "subtlety": row["subtlety"].strip(),
    }
    fields.update({ours: row[theirs].strip() for theirs, ours in CBIS_COLUMNS[kind].items()})
    return fields


DATASETS.register(
    Dataset(
        name="vindr_mammo",
        iter_records=iter_vindr,
        version=ADAPTER_VERSION,
        description="VinDr-Mammo mammograms with breast-level BI-RADS 1-5",
        published_format="breast-level_annotations.csv + images/<study_id>/<image_id>.dicom",
        homepage="https://physionet.org/content/vindr-mammo/",
        labels=BIRADS,
    )
)
for _kind in CBIS_COLUMNS:
    DATASETS.register(
        Dataset(
            name=f"cbis_ddsm_{_kind}",
            iter_records=make_iter_cbis(_kind),
            version=ADAPTER_VERSION,
            description=f"CBIS-DDSM {_kind} abnormalities with their pathology (full mammogram)",
            published_format=f"{_kind}_case_description_{{train,test}}_set.csv + TCIA DICOM tree",
            homepage="https://www.cancerimagingarchive.net/collection/cbis-ddsm/",
            labels=PATHOLOGY,
        )
    )


def _view(fields: Mapping[str, Any]) -> str:
    view, side = fields.get("view"), fields.get("laterality")
    return f"View: {side} {view}" if view and side else ""


TASKS.register(
    Task(
        name="vindr_mammo",
        kind="classification",
        dataset="vindr_mammo",
        instructions=(
            "You are a helpful medical assistant. The following are questions about mammography "
            "reading. Provide a breast-level assessment based on the BI-RADS categories.",
            "Assess the mammogram and give its breast-level BI-RADS category.",
        ),
        parts=classification_parts("What is the most likely breast BI-RADS score?", BIRADS, _view),
        labels=BIRADS,
        shots=1,
        description="VinDr-Mammo breast-level BI-RADS classification (5 classes).",
    )
)

for _kind, _what in (("mass", "mass"), ("calc", "calcification")):
    TASKS.register(
        Task(
            name=f"cbis_ddsm_{_kind}",
            kind="classification",
            dataset=f"cbis_ddsm_{_kind}",
            instructions=(
                "You are a helpful medical assistant. The following are questions about "
                f"mammography abnormalities. Classify the {_what} abnormality by its pathology.",
                f"Is the {_what} in this mammogram benign, benign without callback, or malignant?",
            ),
            parts=classification_parts(
                f"What is the most likely pathology of the {_what} in the image?", PATHOLOGY, _view
            ),
            labels=PATHOLOGY,
            shots=1,
            description=f"CBIS-DDSM {_what} pathology classification (3 classes).",
        )
    )
