"""CPU segmenters from scikit-image: no weights, usable offline.

They over-segment by colour rather than find objects, so they are the demo and test default
when no SAM checkpoint is available, not a substitute for SAM in real datasets.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import numpy as np

from som.segment.mask import Mask
from som.settings import Real, Settings


class SlicParams(Settings):
    n_segments: int = 48
    compactness: Real = 10.0
    sigma: Real = 1.0
    min_area: int = 0


class FelzenszwalbParams(Settings):
    scale: Real = 400.0
    sigma: Real = 0.8
    min_size: int = 300
    min_area: int = 0


def masks_from_labels(labels: np.ndarray, *, min_area: int = 0) -> list[Mask]:
    """One mask per positive label of a label image, cropped with scipy's find_objects."""
    from scipy import ndimage

    height, width = labels.shape
    masks = []
    for value, found in enumerate(ndimage.find_objects(labels), start=1):
        if found is None:
            continue
        rows, cols = found
        crop = labels[found] == value
        mask = Mask(crop, cols.start, rows.start, height, width)
        if mask.area > min_area:
            masks.append(mask)
    return masks


P = TypeVar("P", SlicParams, FelzenszwalbParams)


class _LabelSegmenter(Generic[P]):
    """What both segmenters share: their params, recorded as they are (no paths, no weights)."""

    name: str
    params: P

    def __init__(self, params: P) -> None:
        self.params = params

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "params": self.params.model_dump()}


class SlicSegmenter(_LabelSegmenter[SlicParams]):
    name = "slic"

    def generate(self, image: np.ndarray, *, source: str | None = None) -> list[Mask]:
        from skimage.segmentation import slic

        labels = slic(
            image,
            n_segments=self.params.n_segments,
            compactness=self.params.compactness,
            sigma=self.params.sigma,
            start_label=1,
            enforce_connectivity=True,
        )
        return masks_from_labels(labels, min_area=self.params.min_area)


class FelzenszwalbSegmenter(_LabelSegmenter[FelzenszwalbParams]):
    name = "felzenszwalb"

    def generate(self, image: np.ndarray, *, source: str | None = None) -> list[Mask]:
        from skimage.segmentation import felzenszwalb

        labels = felzenszwalb(image, scale=self.params.scale, sigma=self.params.sigma, min_size=self.params.min_size)
        return masks_from_labels(labels + 1, min_area=self.params.min_area)
