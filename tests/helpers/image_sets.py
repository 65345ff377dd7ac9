"""Image collections for dataset tests: distinct real-photo derivatives plus known-bad files."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageOps

from tests.helpers.data import data_path


def derived_photos(count: int, size: int = 160, start: int = 0) -> dict[str, bytes]:
    """`count` distinct JPEGs cut from the two real photos (different crops, flips, sizes)."""
    photos = [Image.open(data_path(name)).convert("RGB") for name in ("extreme_ironing.jpg", "waterview.jpg")]
    out = {}
    for index in range(start, start + count):
        photo = photos[index % 2]
        grow = max(1.0, 1.7 * size / photo.width, 1.2 * size / photo.height)
        if grow > 1:
            photo = photo.resize((round(photo.width * grow), round(photo.height * grow)))
        rng = np.random.default_rng(index)
        width, height = int(size * rng.uniform(1.0, 1.6)), size
        x = int(rng.integers(0, photo.width - width))
        y = int(rng.integers(0, photo.height - height))
        crop = photo.crop((x, y, x + width, y + height))
        if index % 3 == 0:
            crop = ImageOps.mirror(crop)
        buffer = io.BytesIO()
        crop.save(buffer, format="JPEG", quality=88)
        out[f"photo_{index:03d}.jpg"] = buffer.getvalue()
    return out


def unusual_but_valid() -> dict[str, bytes]:
    """A CMYK JPEG and a 16-bit grayscale PNG: must be converted, not rejected."""
    photo = Image.open(data_path("extreme_ironing.jpg")).resize((240, 160))
    cmyk, deep = io.BytesIO(), io.BytesIO()
    photo.convert("CMYK").save(cmyk, format="JPEG")
    Image.fromarray(np.asarray(photo.convert("L"), dtype=np.uint16) * 257).save(deep, format="PNG")
    return {"cmyk.jpg": cmyk.getvalue(), "gray16.png": deep.getvalue()}


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def pixel_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A tiny PNG whose header claims width x height pixels (a decompression bomb's shape)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _png_chunk(b"IEND", b"")
    )


def bad_files() -> dict[str, tuple[bytes, str]]:
    """Files that must be quarantined, with a word their reason must contain."""
    photo = data_path("waterview.jpg").read_bytes()
    return {
        "empty.jpg": (b"", "empty"),
        "truncated.jpg": (photo[: len(photo) // 3], "truncated"),
        "not_an_image.png": (b"this is a text file, not a picture\n" * 20, "not a recognised image"),
        "bomb.png": (pixel_bomb(), "exceeds the limit"),
        "logo.png": (data_path("som_logo.png").read_bytes(), "truncated"),
    }
