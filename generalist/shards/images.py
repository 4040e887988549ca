"""The image policy (Med-PaLM M): resize keeping aspect ratio, pad to a square, 3 channels.

The shard writer applies it to every image, so training never resizes and every image in a
shard has the same size and mode. Stored losslessly as PNG by default (JPEG on request).
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from generalist.errors import ConfigError

FORMATS = {"png": "PNG", "jpg": "JPEG"}


class ImageDecodeError(ValueError):
    """Bytes that PIL cannot decode as an image (the writer turns it into a BadRecord)."""


@dataclass(frozen=True)
class ImagePolicy:
    """How every stored image looks: `size` x `size`, RGB (channels=3), in `format`.

    pad=True keeps the aspect ratio and pads the short side with black (Med-PaLM M);
    pad=False stretches to the square instead.
    """

    size: int = 224
    pad: bool = True
    channels: int = 3
    format: str = "png"
    jpeg_quality: int = 95

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or not 8 <= self.size <= 4096:
            raise ConfigError(f"image size must be an integer in 8..4096, got {self.size!r}")
        if self.format not in FORMATS:
            raise ConfigError(f"image format must be one of {list(FORMATS)}, got {self.format!r}")
        if self.channels not in (1, 3):
            raise ConfigError(f"image channels must be 1 or 3, got {self.channels!r}")

    def to_json(self) -> dict[str, object]:
        """What manifest.json records as `image_policy`."""
        return {
            k: v for k, v in asdict(self).items() if k != "jpeg_quality" or self.format == "jpg"
        }

    @property
    def extension(self) -> str:
        return self.format

    def apply(self, data: bytes) -> bytes:
        """Decode `data`, apply the policy, return the encoded image bytes.

        Raises ImageDecodeError when `data` is not a readable image.
        """
        image = decode(data)
        image = to_mode(image, "RGB" if self.channels == 3 else "L")
        image = fit_square(image, self.size, self.pad)
        out = io.BytesIO()
        if self.format == "jpg":
            image.save(out, format="JPEG", quality=self.jpeg_quality)
        else:
            # compress_level 1: PNG stays lossless; higher levels cost ~3x the time for ~10% size.
            image.save(out, format="PNG", compress_level=1)
        return out.getvalue()


def decode(data: bytes) -> Image.Image:
    """Open and fully load an image (honouring EXIF rotation); ImageDecodeError if it fails."""
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # Image.open is lazy: truncated data only fails on load
        return ImageOps.exif_transpose(image) or image
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
    ) as err:
        raise ImageDecodeError(f"{type(err).__name__}: {err}") from None


def to_mode(image: Image.Image, mode: str) -> Image.Image:
    """Convert to 8-bit `mode` ("RGB" or "L"); 16-bit/float images are min-max scaled first."""
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # PIL's convert("L") clips 16-bit values at 255; scale the range into 8 bits instead.
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) * (255.0 / (high - low)) if high > low else array * 0
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become black, like the padding, instead of arbitrary colours.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image if image.mode == mode else image.convert(mode)


def fit_square(image: Image.Image, size: int, pad: bool) -> Image.Image:
    """Resize so the longer side is `size` and pad to `size` x `size` (centred, black)."""
    if not pad:
        return image.resize((size, size), Image.Resampling.BICUBIC)
    if image.size == (size, size):
        return image
    return ImageOps.pad(image, (size, size), method=Image.Resampling.BICUBIC, color=0)
