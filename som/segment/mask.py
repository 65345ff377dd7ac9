"""The mask type every segmenter returns.

A mask is stored as its bounding-box crop plus offset: SoM images carry tens to hundreds of
masks, and most are small, so full-image boolean arrays would make ownership, placement and
RLE encoding cost O(masks x pixels). `full()` gives the HxW array when a caller needs one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Mask:
    """One object mask in image coordinates.

    Arguments:
      crop: bool array covering rows y0..y0+h and columns x0..x0+w of the image.
      x0, y0: top-left corner of `crop` in the image.
      height, width: size of the whole image.
      score: the segmenter's confidence (SAM's predicted IoU), None when it has none.
      category: a class name when the source knows it (COCO annotations), else None.
    """

    crop: np.ndarray
    x0: int
    y0: int
    height: int
    width: int
    score: float | None = None
    category: str | None = None
    area: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "area", int(np.count_nonzero(self.crop)))

    @classmethod
    def from_full(cls, mask: np.ndarray, *, score: float | None = None, category: str | None = None) -> Mask:
        """Build from an HxW boolean array, cropping to its bounding box."""
        mask = np.asarray(mask, dtype=bool)
        height, width = mask.shape
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return cls(np.zeros((0, 0), bool), 0, 0, height, width, score, category)
        cols = np.flatnonzero(mask[rows[0] : rows[-1] + 1].any(axis=0))
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        return cls(mask[y0:y1, x0:x1].copy(), int(x0), int(y0), height, width, score, category)

    @property
    def slices(self) -> tuple[slice, slice]:
        """Row and column slices of the crop inside the full image."""
        h, w = self.crop.shape
        return slice(self.y0, self.y0 + h), slice(self.x0, self.x0 + w)

    def full(self) -> np.ndarray:
        """The mask as an HxW boolean array."""
        out = np.zeros((self.height, self.width), dtype=bool)
        out[self.slices] = self.crop
        return out
