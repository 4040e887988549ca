"""PAD-UFES-20: smartphone images of skin lesions with patient history, 6 diagnoses.

Publication followed: PAD-UFES-20 on Mendeley Data (https://data.mendeley.com/datasets/zr7vgbcyr2/1).
Published as metadata.csv plus the images named by its img_id column (PAT_46_881_939.png),
in images/ or in the zip's images/imgs_part_1..3 folders: the adapter finds them by file name
anywhere under --source. Fields: label (full diagnosis name), diagnostic (the published code),
history ("Age: 55, Gender: female, ..." from the clinical columns, blank and UNK left out).
There is no official split: patients are split by a hash of patient_id (70% train, 10%
validation, 20% test), so no patient is in two splits. Ids are img_id without its extension.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from generalist.catalog.parts import classification_parts
from generalist.catalog.records import DATASETS, BadRecord, Dataset, Record
from generalist.catalog.task import TASKS, Task
from generalist.sources.files import (
    check_split,
    csv_row,
    patient_split,
    read_csv,
    read_image,
    require_file,
)

# Published diagnostic codes and the names the prompts use (Med-PaLM M lists full names).
DIAGNOSES = {
    "BCC": "Basal Cell Carcinoma",
    "MEL": "Melanoma",
    "SCC": "Squamous Cell Carcinoma",
    "ACK": "Actinic Keratosis",
    "SEK": "Seborrheic Keratosis",
    "NEV": "Nevus",
}
LABELS = tuple(DIAGNOSES.values())
ADAPTER_VERSION = 1
VALIDATION_FRACTION, TEST_FRACTION = 0.1, 0.2
SPLIT_SALT = "pad_ufes_20"
# Clinical columns in the order the history lists them -> the name it gives them.
HISTORY_COLUMNS = {
    "age": "Age",
    "gender": "Gender",
    "smoke": "Smoke",
    "drink": "Drink",
    "background_father": "Background father",
    "background_mother": "Background mother",
    "pesticide": "Pesticide",
    "skin_cancer_history": "Skin cancer history",
    "cancer_history": "Cancer history",
    "has_piped_water": "Piped water",
    "has_sewage_system": "Sewage system",
    "fitspatrick": "Fitzpatrick skin type",
    "region": "Region",
    "diameter_1": "Diameter 1 (mm)",
    "diameter_2": "Diameter 2 (mm)",
    "itch": "Itch",
    "grew": "Grew",
    "hurt": "Hurt",
    "changed": "Changed",
    "bleed": "Bleed",
    "elevation": "Elevation",
}
COLUMNS = ("patient_id", "lesion_id", *HISTORY_COLUMNS, "diagnostic", "img_id", "biopsed")
_UNKNOWN = {"", "unk", "nan", "none"}


def history(row: Mapping[str, str]) -> str:
    """'Age: 55, Gender: female, Smoke: false, ...' from a metadata row, unknowns left out."""
    parts = []
    for column, name in HISTORY_COLUMNS.items():
        value = str(row.get(column, "")).strip()
        if value.lower() in _UNKNOWN:
            continue
        value = re.sub(r"^(\d+)\.0$", r"\1", value)  # "3.0" -> "3": pandas wrote ints as floats
        parts.append(f"{name}: {value.lower()}")
    return ", ".join(parts)


def split_of(patient_id: str) -> str:
    """The split of a patient (deterministic, see the module docstring)."""
    return patient_split(patient_id, SPLIT_SALT, VALIDATION_FRACTION, TEST_FRACTION)


def iter_records(source: Path, split: str) -> Iterator[Record | BadRecord]:
    """One record per image of the patients in `split`."""
    check_split(split, ("train", "validation", "test"), "pad_ufes_20")
    hint = "--source is the unzipped PAD-UFES-20 folder (metadata.csv and images/)"
    metadata = require_file(source, ("metadata.csv",), "pad_ufes_20", hint)
    rows = read_csv(metadata, COLUMNS, "pad_ufes_20")
    images = {p.name: p for p in sorted(Path(source).rglob("*.png"))}
    for index, row in enumerate(rows):
        patient = row["patient_id"].strip()
        if split_of(patient) != split:
            continue
        where = f"pad_ufes_20: {csv_row(metadata, index)}"
        code, name = row["diagnostic"].strip(), row["img_id"].strip()
        if code not in DIAGNOSES:
            yield BadRecord(f"{where}: diagnostic {code!r} is not one of {list(DIAGNOSES)}")
            continue
        path = images.get(name)
        if path is None:
            yield BadRecord(f"{where}: image {name!r} is not under {source}")
            continue
        data = read_image(path, where)
        if isinstance(data, BadRecord):
            yield data
            continue
        yield Record(
            id=Path(name).stem,
            split=split,
            images=(data,),
            fields={"label": DIAGNOSES[code], "diagnostic": code, "history": history(row)},
            meta=_meta(row),
        )


def _meta(row: Mapping[str, str]) -> dict[str, Any]:
    keys = ("patient_id", "lesion_id", "img_id", "biopsed")
    return {k: row[k].strip() for k in keys}


DATASETS.register(
    Dataset(
        name="pad_ufes_20",
        iter_records=iter_records,
        version=ADAPTER_VERSION,
        description="PAD-UFES-20 skin lesion photos with clinical history (6 diagnoses)",
        published_format="metadata.csv + images/**/<img_id>.png",
        homepage="https://data.mendeley.com/datasets/zr7vgbcyr2/1",
        labels=LABELS,
    )
)


def _history(fields: Mapping[str, Any]) -> str:
    text = str(fields.get("history") or "").strip()
    return f"Patient History: {text}" if text else ""


TASKS.register(
    Task(
        name="pad_ufes_20",
        kind="classification",
        dataset="pad_ufes_20",
        instructions=(
            "You are a helpful dermatology assistant. The following are questions about skin "
            "lesions. Categorize the skin lesions into the most likely class given the patient "
            "history.",
            "Classify the skin lesion in the image, using the patient history, into one of the "
            "options.",
        ),
        parts=classification_parts(
            "Which of the following is the most likely diagnosis of the patient's skin lesion?",
            LABELS,
            _history,
        ),
        labels=LABELS,
        shots=1,
        description="PAD-UFES-20 skin lesion classification (6 classes) with patient history.",
    )
)
