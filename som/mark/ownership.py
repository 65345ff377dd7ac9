"""Exclusive pixel ownership: the smallest original mask containing a pixel owns it.

Masks are ranked by area ascending (stable, so equal areas keep input order) and painted
into one label map from the largest to the smallest, each only over its bounding box. The
result is one int32 map instead of N full-image boolean residuals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from som.segment.mask import Mask


@dataclass(frozen=True)
class Ownership:
    """Who owns each pixel.

    order: indices into the input masks, by area ascending; rank r means masks[order[r]].
    owner: HxW int32 map, 0 where no mask, r + 1 where the mask of rank r owns the pixel.
    residual_area: pixels owned by the mask of each rank.
    """

    order: np.ndarray
    owner: np.ndarray
    residual_area: np.ndarray

    def residual_crop(self, rank: int, mask: Mask) -> np.ndarray:
        """Boolean residual of the mask of `rank`, over that mask's bounding box."""
        return self.owner[mask.slices] == rank + 1


def assign_ownership(masks: Sequence[Mask], height: int, width: int) -> Ownership:
    areas = np.fromiter((m.area for m in masks), dtype=np.int64, count=len(masks))
    order = np.argsort(areas, kind="stable")
    owner = np.zeros((height, width), dtype=np.int32)
    for rank in range(len(order) - 1, -1, -1):
        mask = masks[order[rank]]
        if mask.crop.size:
            owner[mask.slices][mask.crop] = rank + 1
    residual_area = np.bincount(owner.ravel(), minlength=len(order) + 1)[1:]
    return Ownership(order=order, owner=owner, residual_area=residual_area)
