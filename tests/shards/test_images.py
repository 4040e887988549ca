"""The image policy: size, aspect-preserving padding, 3 channels, formats."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from generalist.errors import ConfigError
from generalist.shards.images import ImageDecodeError, ImagePolicy


def encode(array: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.fromarray(array, mode=mode).save(out, format=fmt)
    return out.getvalue()


def decode(data: bytes) -> tuple[Image.Image, np.ndarray]:
    image = Image.open(io.BytesIO(data))
    return image, np.asarray(image)


def test_wide_image_is_resized_keeping_aspect_and_padded_black():
    array = np.full((20, 40, 3), 200, dtype=np.uint8)  # 2:1, light grey
    image, pixels = decode(ImagePolicy(size=16).apply(encode(array)))
    assert (image.format, image.mode, image.size) == ("PNG", "RGB", (16, 16))
    # 40x20 -> 16x8, centred: rows 0-3 and 12-15 are padding.
    assert (pixels[:4] == 0).all() and (pixels[12:] == 0).all()
    assert (pixels[4:12] == 200).all()


def test_tall_image_pads_left_and_right():
    array = np.full((40, 10, 3), 90, dtype=np.uint8)
    _, pixels = decode(ImagePolicy(size=20).apply(encode(array)))
    assert pixels.shape == (20, 20, 3)
    assert (pixels[:, :7] == 0).all() and (pixels[:, 13:] == 0).all()
    assert (pixels[:, 8:12] == 90).all()


def test_grayscale_becomes_three_equal_channels():
    array = np.arange(64, dtype=np.uint8).reshape(8, 8) * 4
    image, pixels = decode(ImagePolicy(size=8).apply(encode(array, "L")))
    assert image.mode == "RGB" and pixels.shape == (8, 8, 3)
    assert (pixels[..., 0] == array).all() and (pixels[..., 1] == array).all()
    assert (pixels[..., 2] == array).all()


def test_sixteen_bit_is_scaled_not_clipped():
    array = np.array([[1000, 3000], [5000, 9000]], dtype=np.uint16)
    _, pixels = decode(ImagePolicy(size=8, pad=False).apply(encode(array)))
    assert pixels.min() == 0 and pixels.max() == 255  # a plain convert would clip all to 255


def test_transparent_pixels_become_black():
    array = np.zeros((8, 8, 4), dtype=np.uint8)
    array[..., :3] = 255  # white but fully transparent
    array[:4, :, 3] = 255  # top half opaque
    _, pixels = decode(ImagePolicy(size=8).apply(encode(array, "RGBA")))
    assert (pixels[:4] == 255).all() and (pixels[4:] == 0).all()


def test_no_pad_stretches_and_jpeg_format_and_one_channel():
    array = np.full((10, 30, 3), 120, dtype=np.uint8)
    image, pixels = decode(ImagePolicy(size=12, pad=False, format="jpg").apply(encode(array)))
    assert (image.format, image.size) == ("JPEG", (12, 12))
    assert abs(int(pixels.mean()) - 120) <= 2  # no black bands
    gray, _ = decode(ImagePolicy(size=12, channels=1).apply(encode(array)))
    assert gray.mode == "L"


def test_policy_json_and_validation():
    assert ImagePolicy().to_json() == {"size": 224, "pad": True, "channels": 3, "format": "png"}
    assert ImagePolicy(format="jpg").to_json()["jpeg_quality"] == 95
    with pytest.raises(ConfigError, match=r"image size must be an integer in 8\.\.4096, got 0"):
        ImagePolicy(size=0)
    with pytest.raises(ConfigError, match=r"image format must be one of \['png', 'jpg'\]"):
        ImagePolicy(format="gif")


NOISE = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize("data", [b"", b"not an image", encode(NOISE)[:3000]])
def test_undecodable_bytes_raise_image_decode_error(data):
    with pytest.raises(ImageDecodeError):
        ImagePolicy(size=8).apply(data)
