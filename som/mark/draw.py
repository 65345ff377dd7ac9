"""Drawing tags, mask fills, boxes and contours onto the marked image.

Fills are one blend through a colour lookup on the ownership map; boxes and contours are
OpenCV line drawing per tag; labels are small alpha blends under PIL text. No matplotlib.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from som.mark.options import MarkOptions

WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
_GOLDEN = 0.618033988749895
MIN_FONT_SIZE = 8  # below this digits are unreadable, whatever the image size


@dataclass(frozen=True)
class TagShape:
    """What the drawing needs of one tag: its rank in the ownership map and its geometry."""

    rank: int
    label: str
    position: tuple[int, int]  # (x, y) centre of the label
    box: tuple[int, int, int, int]  # (x0, y0, x1, y1) end-exclusive box of the residual


def tag_colour(index: int, seed: int) -> tuple[int, int, int]:
    """A bright colour for tag `index` (1-based); the same index and seed give the same colour."""
    hue = (seed * 0.137 + index * _GOLDEN) % 1.0
    red, green, blue = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return round(red * 255), round(green * 255), round(blue * 255)


def contrast_text(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever reads better on `colour` (ITU-R BT.601 luma)."""
    luma = 0.299 * colour[0] + 0.587 * colour[1] + 0.114 * colour[2]
    return BLACK if luma > 150 else WHITE


@lru_cache(maxsize=32)
def label_font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def scaled(value: int, image_shape: tuple[int, ...]) -> int:
    """`value` given for a 640-pixel short side, scaled to this image."""
    return max(1, round(value * min(image_shape[:2]) / 640))


def draw_tags(image: np.ndarray, owner: np.ndarray, tags: Sequence[TagShape], options: MarkOptions) -> np.ndarray:
    """Return a new HxWx3 uint8 image with the requested modes drawn for `tags`."""
    canvas = np.ascontiguousarray(image, dtype=np.uint8).copy()
    colours = [tag_colour(i + 1, options.seed) for i in range(len(tags))]
    line = scaled(options.line_width, canvas.shape)
    if "mask" in options.modes:
        _fill_masks(canvas, owner, tags, colours, options.mask_alpha)
    if "contour" in options.modes:
        for tag, colour in zip(tags, colours, strict=False):
            _draw_contour(canvas, owner, tag, colour, line)
    if "box" in options.modes:
        for tag, colour in zip(tags, colours, strict=False):
            x0, y0, x1, y1 = tag.box
            cv2.rectangle(canvas, (x0, y0), (x1 - 1, y1 - 1), colour, line)
    if "mark" in options.modes:
        coloured = "mask" in options.modes
        canvas = _draw_labels(canvas, tags, colours if coloured else None, options)
    return canvas


def _fill_masks(
    canvas: np.ndarray,
    owner: np.ndarray,
    tags: Sequence[TagShape],
    colours: Sequence[tuple[int, int, int]],
    alpha: float,
) -> None:
    lut = np.zeros((int(owner.max()) + 1, 3), dtype=np.float32)
    filled = np.zeros(len(lut), dtype=bool)
    for tag, colour in zip(tags, colours, strict=False):
        lut[tag.rank + 1] = colour
        filled[tag.rank + 1] = True
    where = filled[owner]
    pixels = canvas[where].astype(np.float32)
    canvas[where] = np.rint(pixels * (1 - alpha) + lut[owner[where]] * alpha).astype(np.uint8)


def _draw_contour(
    canvas: np.ndarray, owner: np.ndarray, tag: TagShape, colour: tuple[int, int, int], line: int
) -> None:
    x0, y0, x1, y1 = tag.box
    residual = (owner[y0:y1, x0:x1] == tag.rank + 1).astype(np.uint8)
    contours, _ = cv2.findContours(residual, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0))
    cv2.drawContours(canvas, contours, -1, colour, line)


def _draw_labels(
    canvas: np.ndarray,
    tags: Sequence[TagShape],
    colours: Sequence[tuple[int, int, int]] | None,
    options: MarkOptions,
) -> np.ndarray:
    height, width = canvas.shape[:2]
    size = max(MIN_FONT_SIZE, scaled(options.font_size, canvas.shape))
    font = label_font(size)
    pad = max(1, size // 8)
    texts = []
    for index, tag in enumerate(tags):
        left, top, right, bottom = font.getbbox(tag.label, anchor="mm")
        cx, cy = tag.position
        bx0, by0 = max(0, cx + left - pad), max(0, cy + top - pad)
        bx1, by1 = min(width, cx + right + pad), min(height, cy + bottom + pad)
        box_colour = colours[index] if colours else BLACK
        region = canvas[by0:by1, bx0:bx1]
        blended = region * (1 - options.box_alpha) + np.asarray(box_colour) * options.box_alpha
        region[...] = np.rint(blended).astype(np.uint8)
        texts.append(((cx, cy), tag.label, contrast_text(box_colour) if colours else WHITE))
    picture = Image.fromarray(canvas)
    pen = ImageDraw.Draw(picture)
    for position, text, fill in texts:
        pen.text(position, text, fill=fill, font=font, anchor="mm")
    return np.asarray(picture)
