"""Shared builders for the imaging adapter tests: tiny images, tiny DICOM files, and the
shard round trip (write_dataset -> read_records -> compare -> render)."""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from generalist.catalog.records import DATASETS, BadRecord, Record

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # `datasets` must never reach for the hub here
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def image_bytes(value: int, size: tuple[int, int] = (12, 8), fmt: str = "PNG") -> bytes:
    """A small image whose pixels encode `value`, so every fixture image differs."""
    array = np.full((size[1], size[0], 3), value % 256, dtype=np.uint8)
    array[0, 0] = (value * 7 % 256, value * 13 % 256, 1)
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def dicom_bytes(
    pixels: np.ndarray, photometric: str = "MONOCHROME2", bits_stored: int = 12, **tags: object
) -> bytes:
    """A real DICOM file (Explicit VR Little Endian, uncompressed) holding `pixels`."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("fixture.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MG"
    ds.set_pixel_data(pixels, photometric, bits_stored)
    for key, value in tags.items():
        setattr(ds, key, value)
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def records_of(dataset: str, source: Path, split: str) -> list[Record | BadRecord]:
    return list(DATASETS.get(dataset).iter_records(source, split))


def good(items: list[Record | BadRecord]) -> list[Record]:
    """The records, asserting there is no BadRecord among them."""
    bad = [str(i) for i in items if isinstance(i, BadRecord)]
    assert not bad, bad
    return [i for i in items if isinstance(i, Record)]


def round_trip(
    dataset: str, task: str, source: Path, out: Path, splits: list[str]
) -> dict[str, list[Record]]:
    """Shard `source`, read every split back, check it equals the adapter's records field by
    field (images re-encoded 224x224 RGB by the policy) and render `task` from the shards."""
    from generalist.catalog.task import TASKS
    from generalist.cli.render import render_examples
    from generalist.shards.manifest import read_records, verify_dataset
    from generalist.shards.writer import write_dataset

    manifest = write_dataset(dataset, source, out, splits=splits, progress=False)
    verify_dataset(out, dataset)
    back: dict[str, list[Record]] = {}
    for split in splits:
        expected = good(records_of(dataset, source, split))
        back[split] = list(read_records(out, dataset, split))
        assert manifest["splits"][split]["count"] == len(expected)
        assert [r.id for r in back[split]] == [r.id for r in expected]
        for mine, theirs in zip(back[split], expected):
            assert (mine.split, dict(mine.fields), dict(mine.meta)) == (
                theirs.split,
                dict(theirs.fields),
                dict(theirs.meta),
            )
            assert len(mine.images) == len(theirs.images)
            with Image.open(io.BytesIO(mine.images[0])) as stored:
                assert (stored.size, stored.mode) == ((224, 224), "RGB")
    shown = splits[-1]
    examples = render_examples(
        TASKS.get(task), iter(back[shown]), iter(back["train"]), 2, seed=0, train=False
    )
    assert examples and all(e.prompt.endswith("A:") for e in examples)
    assert [e.target for e in examples] == [
        TASKS.get(task).parts_of(r).target for r in back[shown][:2]
    ]
    return back


@pytest.fixture
def helpers() -> SimpleNamespace:
    """The builders above, for tests (the importlib import mode cannot import conftest)."""
    funcs: dict[str, Callable] = {
        "image_bytes": image_bytes,
        "dicom_bytes": dicom_bytes,
        "records_of": records_of,
        "good": good,
        "round_trip": round_trip,
    }
    return SimpleNamespace(**funcs)
