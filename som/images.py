"""Safe image loading shared by every path that reads user images.

Real collections hold rotated phone photos, palette GIFs, CMYK scans, 16-bit PNGs, truncated
uploads and the occasional decompression bomb. Everything goes through `load_image`, which
either returns an upright 8-bit RGB array or raises one typed error naming the file and reason,
so callers can quarantine the file and carry on.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 100_000_000
"""Images with more pixels are refused before decoding (a 10k x 10k photo still loads).

Pillow refuses anything over 2 x Image.MAX_IMAGE_PIXELS (about 179 M) on its own; raising
`max_pixels` beyond that also needs that Pillow setting raised by the caller."""

DEFAULT_MAX_ASPECT_RATIO = 30.0
"""Longer side / shorter side above this is refused: tags on a strip are meaningless, and
scaling its short side up to 640 multiplies its pixels (3000x1 would become 1,920,000x640,
27.5 GiB). Real photo sets stay well under it: 3:2 and 16:9 photos, 4-10:1 panoramas, tall
phone screenshots around 2-3:1."""

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


class ImageLoadError(Exception):
    """An input that cannot be used as an image; `reason` is short and human readable."""

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


@dataclass(frozen=True)
class LoadedImage:
    """An upright RGB image plus what identifies its source bytes."""

    rgb: np.ndarray  # HxWx3 uint8
    sha256: str
    source: str

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])


def load_image(source: str | Path, data: bytes | None = None, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Read `source` (or decode `data` already read from it) into an upright RGB array.

    Raises ImageLoadError for empty, truncated, non-image or oversized inputs.
    """
    name = str(source)
    if data is None:
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise ImageLoadError(name, f"cannot read file: {exc.strerror or exc}") from exc
    return decode_image(data, name, max_pixels=max_pixels)


def decode_image(data: bytes, source: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode image bytes; see `load_image`."""
    if not data:
        raise ImageLoadError(source, "empty file (0 bytes)")
    digest = hashlib.sha256(data).hexdigest()
    with warnings.catch_warnings():
        # We enforce our own pixel limit below; PIL's warning would only add noise.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image: Image.Image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError as exc:
            raise ImageLoadError(source, "not a recognised image format") from exc
        except Image.DecompressionBombError as exc:
            raise ImageLoadError(source, f"too many pixels: exceeds the limit of {max_pixels}") from exc
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            # A recognised format whose header is cut short or malformed (PIL raises these
            # from its plugins' _open, e.g. "Truncated File Read" for a JPEG cut in its markers).
            raise ImageLoadError(source, f"corrupt or truncated image header: {exc}") from exc
        width, height = image.size
        if width * height > max_pixels:
            raise ImageLoadError(
                source, f"{width}x{height} = {width * height} pixels exceeds the limit of {max_pixels}"
            )
        if width == 0 or height == 0:
            raise ImageLoadError(source, "image has zero width or height")
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise ImageLoadError(source, f"corrupt or truncated image data: {exc}") from exc
        try:
            image = ImageOps.exif_transpose(image)
        except Exception:  # noqa: BLE001 - malformed EXIF must not lose an otherwise good image
            pass
    return LoadedImage(rgb=to_rgb_array(image), sha256=digest, source=source)


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert any PIL mode to HxWx3 uint8, scaling high bit depths instead of clipping them."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    if mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def resized_size(
    width: int,
    height: int,
    short_side: int,
    *,
    source: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
) -> tuple[int, int]:
    """(width, height) after `resize_short_side`, checked before anything is allocated.

    Raises ImageLoadError when the aspect ratio exceeds `max_aspect_ratio` (0 disables it)
    or the resized image would exceed `max_pixels`: the load-time pixel limit alone does not
    stop a tiny strip from being scaled up to gigabytes.
    """
    short, long = min(width, height), max(width, height)
    if short <= 0:
        raise ImageLoadError(source, "image has zero width or height")
    if max_aspect_ratio > 0 and long / short > max_aspect_ratio:
        raise ImageLoadError(
            source,
            f"extreme aspect ratio {width}x{height} ({long / short:.1f}:1) exceeds the limit of {max_aspect_ratio:g}:1",
        )
    if short_side <= 0 or short == short_side:
        size = (width, height)
    elif height <= width:
        size = (int(short_side * width / height), short_side)
    else:
        size = (short_side, int(short_side * height / width))
    if size[0] * size[1] > max_pixels:
        raise ImageLoadError(
            source,
            f"{width}x{height} resized to {size[0]}x{size[1]} = {size[0] * size[1]} pixels exceeds "
            f"the limit of {max_pixels}",
        )
    return size


def resize_short_side(
    rgb: np.ndarray,
    short_side: int,
    *,
    source: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_aspect_ratio: float = DEFAULT_MAX_ASPECT_RATIO,
) -> tuple[np.ndarray, float]:
    """Resize so the shorter side is `short_side` (0: unchanged); returns (image, scale).

    Sizes follow torchvision's Resize(int) used by the SoM annotator: the longer side is
    truncated, not rounded. Enlarging is bicubic; shrinking averages areas (antialiased, as
    PIL's bicubic is when shrinking). OpenCV does either ~10x faster than PIL here, which
    matters at tens of images per second. `scale` maps original coordinates to resized ones.
    Raises ImageLoadError (naming `source`) for sizes `resized_size` refuses, before allocating.
    """
    import cv2

    height, width = rgb.shape[:2]
    size = resized_size(
        width, height, short_side, source=source, max_pixels=max_pixels, max_aspect_ratio=max_aspect_ratio
    )
    if size == (width, height):
        return rgb, 1.0
    scale = short_side / min(height, width)
    interpolation = cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA
    return cv2.resize(rgb, size, interpolation=interpolation), scale


def expand2square(image: Image.Image, background: tuple[int, ...]) -> Image.Image:
    """`image` centred on a square canvas of its longer side filled with `background`: LLaVA's
    ``mm_utils.expand2square`` (offsets ``(long - short) // 2``), the ``image_aspect_ratio pad``
    that LLaVA-1.5 trains and evaluates with. Training, evaluation and serving all call this."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    canvas = Image.new(image.mode, (side, side), background)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas
