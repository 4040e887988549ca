"""DICOM -> 8-bit grayscale PNG bytes (pydicom), for the mammography adapters.

Steps, in the order the DICOM standard applies them: modality LUT (RescaleSlope/Intercept),
VOI LUT or window (WindowCenter/Width, the first one when several are given), scaling to 0-255,
then inversion for MONOCHROME1 (where 0 means white) so every PNG has white = dense tissue.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from generalist.errors import DataError


def _read(source: Path | bytes, where: str):  # -> pydicom.Dataset
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        raw = io.BytesIO(source) if isinstance(source, bytes) else source
        return pydicom.dcmread(raw)
    except (InvalidDicomError, OSError, EOFError, ValueError, KeyError) as err:
        reason = f"{type(err).__name__}: {err}"
        raise DataError(f"{where}: not a readable DICOM file ({reason})") from None


def dicom_to_array(source: Path | bytes, where: str = "") -> np.ndarray:
    """The first frame of a DICOM image as uint8, windowed, MONOCHROME1 inverted.

    Grayscale gives (rows, columns); colour (SamplesPerPixel 3) gives (rows, columns, 3).
    """
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    where = where or (str(source) if not isinstance(source, bytes) else "DICOM bytes")
    ds = _read(source, where)
    if "PixelData" not in ds:
        raise DataError(f"{where}: the DICOM file holds no pixel data")
    try:
        pixels = ds.pixel_array
    except Exception as err:  # pydicom raises several types for missing decoders or bad data
        raise DataError(
            f"{where}: cannot decode the pixel data (transfer syntax "
            f"{ds.file_meta.get('TransferSyntaxUID', '?')}: {err}); for JPEG 2000 / JPEG-LS "
            f"install `pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg`"
        ) from None
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if int(ds.get("SamplesPerPixel", 1)) > 1:
        return _to_uint8(pixels.astype(np.float64))  # colour: no LUTs apply, just scale
    values = apply_modality_lut(pixels, ds)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        values = apply_voi_lut(values, ds, index=0)
    out = _to_uint8(np.asarray(values, dtype=np.float64))
    if photometric == "MONOCHROME1":
        out = 255 - out
    return out


def _to_uint8(values: np.ndarray) -> np.ndarray:
    """Min-max scaling to 0-255 (after windowing, min/max are the window's ends)."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros(values.shape, dtype=np.uint8)
    return np.round((values - low) * (255.0 / (high - low))).astype(np.uint8)


def dicom_to_png(source: Path | bytes, where: str = "", max_side: int | None = None) -> bytes:
    """PNG bytes of a DICOM image (see dicom_to_array); `max_side` shrinks big images first.

    PNG compression level 1: mammograms are large and the shard writer re-encodes anyway.
    """
    image = Image.fromarray(dicom_to_array(source, where))
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
