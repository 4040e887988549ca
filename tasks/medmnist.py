"""MedMNIST v2 2D datasets (as BiomedGPT uses them): <flag>.npz with train/val/test images
and labels. Label names follow medmnist's INFO table (medmnist/info.py).

Publication followed: MedMNIST v2 / MedMNIST+ on Zenodo (https://zenodo.org/records/10519652,
https://medmnist.com; the `medmnist` package downloads the same files). Published format:
`<flag>.npz` (or `<flag>_64.npz`, `_128.npz`, `_224.npz` for MedMNIST+) with arrays
train_images, train_labels, val_images, val_labels, test_images, test_labels; images uint8
(N, H, W) grayscale or (N, H, W, 3) RGB; labels integer (N, 1). Split "val" is our
"validation". One dataset is registered per flag; --source is the .npz or its directory.

ChestMNIST is left out: it is multi-label (14 findings), which single-answer multiple choice
cannot pose; use mimic_cxr_classification for chest findings.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image

from generalist.catalog.parts import classification_parts
from generalist.catalog.records import DATASETS, BadRecord, Dataset, IterRecords, Record
from generalist.catalog.task import TASKS, Task
from generalist.errors import DataError

ADAPTER_VERSION = 1
NPZ_SPLIT = {"train": "train", "validation": "val", "test": "test"}

ORGANS = (
    "bladder",
    "femur-left",
    "femur-right",
    "heart",
    "kidney-left",
    "kidney-right",
    "liver",
    "lung-left",
    "lung-right",
    "pancreas",
    "spleen",
)

# flag -> (modality sentence, label names in label-index order)
MEDMNIST_LABELS: dict[str, tuple[str, tuple[str, ...]]] = {
    "pathmnist": (
        "colon pathology",
        (
            "adipose",
            "background",
            "debris",
            "lymphocytes",
            "mucus",
            "smooth muscle",
            "normal colon mucosa",
            "cancer-associated stroma",
            "colorectal adenocarcinoma epithelium",
        ),
    ),
    "dermamnist": (
        "dermatoscope",
        (
            "actinic keratoses and intraepithelial carcinoma",
            "basal cell carcinoma",
            "benign keratosis-like lesions",
            "dermatofibroma",
            "melanoma",
            "melanocytic nevi",
            "vascular lesions",
        ),
    ),
    "octmnist": (
        "retinal OCT",
        (
            "choroidal neovascularization",
            "diabetic macular edema",
            "drusen",
            "normal",
        ),
    ),
    "pneumoniamnist": ("chest X-ray", ("normal", "pneumonia")),
    "retinamnist": ("fundus camera", ("0", "1", "2", "3", "4")),
    "breastmnist": ("breast ultrasound", ("malignant", "normal, benign")),
    "bloodmnist": (
        "blood cell microscope",
        (
            "basophil",
            "eosinophil",
            "erythroblast",
            "immature granulocytes(myelocytes, metamyelocytes and promyelocytes)",
            "lymphocyte",
            "monocyte",
            "neutrophil",
            "platelet",
        ),
    ),
    "tissuemnist": (
        "kidney cortex microscope",
        (
            "Collecting Duct, Connecting Tubule",
            "Distal Convoluted Tubule",
            "Glomerular endothelial cells",
            "Interstitial endothelial cells",
            "Leukocytes",
            "Podocytes",
            "Proximal Tubule Segments",
            "Thick Ascending Limb",
        ),
    ),
    "organamnist": ("abdominal CT (axial)", ORGANS),
    "organcmnist": ("abdominal CT (coronal)", ORGANS),
    "organsmnist": ("abdominal CT (sagittal)", ORGANS),
}

for _flag, (_modality, _labels) in MEDMNIST_LABELS.items():
    TASKS.register(
        Task(
            name=_flag,
            kind="classification",
            dataset=_flag,
            instructions=(
                f"You are a helpful medical assistant. Classify the {_modality} image.",
                f"Which class does this {_modality} image belong to? Pick one option.",
            ),
            parts=classification_parts("What is the class of the image?", _labels),
            labels=_labels,
            shots=1,
            description=f"MedMNIST {_flag}: {_modality}, {len(_labels)} classes.",
        )
    )


def find_npz(source: Path, flag: str) -> Path:
    """`source` itself if it is a file, else `<flag>.npz` (or one `<flag>_<size>.npz`) in it."""
    source = Path(source)
    if source.is_file():
        return source
    exact = source / f"{flag}.npz"
    if exact.is_file():
        return exact
    sized = sorted(source.glob(f"{flag}_*.npz"))
    if len(sized) == 1:
        return sized[0]
    if sized:
        raise DataError(
            f"{flag}: several MedMNIST+ files in {source} ({[p.name for p in sized]}); "
            f"pass the one to use as --source"
        )
    raise DataError(f"{flag}: missing {exact}; download {flag}.npz from MedMNIST (zenodo)")


def npy_rows(archive: zipfile.ZipFile, name: str, where: str) -> tuple[int, Iterator[np.ndarray]]:
    """(row count, rows) of one array of an .npz, streamed from the zip member.

    Our own reader because np.load would hold a whole split in memory (13 GB for
    pathmnist_224 train). Object arrays are refused: nothing is ever unpickled.
    """
    try:
        stream = archive.open(f"{name}.npy")
    except KeyError:
        raise DataError(
            f"{where}: no array {name!r}; MedMNIST .npz files have "
            f"train/val/test _images and _labels (found {archive.namelist()})"
        ) from None
    version = np.lib.format.read_magic(stream)
    read_header = (
        np.lib.format.read_array_header_1_0
        if version == (1, 0)
        else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read_header(stream)
    if dtype.hasobject or fortran or not shape:
        stream.close()
        raise DataError(f"{where}: array {name!r} is not a plain C-ordered numeric array")
    row_shape = shape[1:]
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * dtype.itemsize

    def rows() -> Iterator[np.ndarray]:
        with stream:
            for n in range(shape[0]):
                data = stream.read(row_bytes)
                if len(data) != row_bytes:
                    raise DataError(f"{where}: array {name!r} is truncated at row {n}")
                yield np.frombuffer(data, dtype=dtype).reshape(row_shape)

    return shape[0], rows()


def png_bytes(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def medmnist_adapter(flag: str, labels: tuple[str, ...]) -> IterRecords:
    """iter_records for one MedMNIST flag: one record per image, label index -> name."""

    def iter_records(source: Path, split: str) -> Iterator[Record | BadRecord]:
        path = find_npz(source, flag)
        prefix = NPZ_SPLIT[split]
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as err:
            raise DataError(f"{flag}: {path} is not a readable .npz ({err})") from None
        with archive:
            n_images, images = npy_rows(archive, f"{prefix}_images", str(path))
            n_labels, label_rows = npy_rows(archive, f"{prefix}_labels", str(path))
            if n_images != n_labels:
                raise DataError(
                    f"{path}: {prefix}_images has {n_images} rows but {prefix}_labels {n_labels}"
                )
            for index, (image, label) in enumerate(zip(images, label_rows)):
                where = f"{path} {prefix}_labels row {index}"
                if label.size != 1:
                    yield BadRecord(f"{where}: {label.size} labels; {flag} is single-label")
                    continue
                value = int(label.reshape(-1)[0])
                if not 0 <= value < len(labels):
                    yield BadRecord(f"{where}: label {value} outside 0..{len(labels) - 1}")
                    continue
                if image.ndim not in (2, 3) or image.dtype != np.uint8:
                    yield BadRecord(f"{path} {prefix}_images row {index}: not a uint8 image")
                    continue
                yield Record(
                    id=f"{flag}-{split}-{index}",
                    split=split,
                    images=(png_bytes(image),),
                    fields={"label": labels[value], "label_index": value},
                    meta={"index": index, "source_file": path.name},
                )

    iter_records.__qualname__ = f"medmnist_adapter.<{flag}>"
    return iter_records


for _flag, (_modality, _labels) in MEDMNIST_LABELS.items():
    DATASETS.register(
        Dataset(
            name=_flag,
            iter_records=medmnist_adapter(_flag, _labels),
            version=ADAPTER_VERSION,
            description=f"MedMNIST v2 {_flag} ({_modality})",
            published_format=f"{_flag}.npz (train/val/test _images and _labels arrays)",
            homepage="https://medmnist.com",
            labels=_labels,
        )
    )
