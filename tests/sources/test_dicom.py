"""DICOM -> 8-bit PNG: rescale, windowing, MONOCHROME1 inversion, clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from generalist.errors import DataError
from generalist.sources.dicom import dicom_to_array, dicom_to_png

RAW = np.array([[0, 1000], [2000, 4000]], dtype=np.uint16)


def test_min_max_scaling_to_8_bit(helpers) -> None:
    out = dicom_to_array(helpers.dicom_bytes(RAW))
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 64], [128, 255]]


def test_monochrome1_is_inverted(helpers) -> None:
    out = dicom_to_array(helpers.dicom_bytes(RAW, "MONOCHROME1"))
    assert out.tolist() == [[255, 191], [127, 0]]


def test_window_center_width_clips(helpers) -> None:
    # Window [500, 1500]: 0 -> black, 1000 -> mid grey, 2000 and 4000 -> white.
    out = dicom_to_array(helpers.dicom_bytes(RAW, WindowCenter=1000, WindowWidth=1000))
    assert out.tolist() == [[0, 128], [255, 255]]


def test_rescale_slope_intercept_applied_before_window(helpers) -> None:
    # Slope 2: stored 500 -> 1000, the window's centre.
    raw = np.array([[0, 500], [1000, 2000]], dtype=np.uint16)
    dicom = helpers.dicom_bytes(
        raw, RescaleSlope=2, RescaleIntercept=0, WindowCenter=1000, WindowWidth=1000
    )
    assert dicom_to_array(dicom).tolist() == [[0, 128], [255, 255]]


def test_png_bytes_and_max_side(helpers, tmp_path) -> None:
    path = tmp_path / "x.dcm"
    path.write_bytes(helpers.dicom_bytes(np.arange(40 * 20, dtype=np.uint16).reshape(40, 20)))
    with Image.open(io.BytesIO(dicom_to_png(path))) as image:
        assert (image.format, image.mode, image.size) == ("PNG", "L", (20, 40))
    with Image.open(io.BytesIO(dicom_to_png(path, max_side=10))) as image:
        assert image.size == (5, 10)


def test_not_dicom_names_the_file(tmp_path) -> None:
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"this is not a dicom file")
    with pytest.raises(DataError, match=r"broken\.dcm: not a readable DICOM file"):
        dicom_to_array(path)


def test_no_pixel_data(helpers, tmp_path) -> None:
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(helpers.dicom_bytes(RAW)))
    del ds.PixelData
    path = tmp_path / "empty.dcm"
    ds.save_as(path)
    with pytest.raises(DataError, match=r"empty\.dcm: the DICOM file holds no pixel data"):
        dicom_to_array(path)
