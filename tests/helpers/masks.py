"""Random mask sets for property tests, and the brute-force reference annotator they check against."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from som.segment.mask import Mask


def random_masks(seed: int, height: int, width: int, count: int) -> list[Mask]:
    """Overlapping rectangles and blobs, some sharing an area (to exercise tie-breaking)."""
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(count):
        full = np.zeros((height, width), bool)
        y0, x0 = rng.integers(0, height), rng.integers(0, width)
        y1, x1 = rng.integers(y0 + 1, height + 1), rng.integers(x0 + 1, width + 1)
        if rng.random() < 0.5:
            full[y0:y1, x0:x1] = True
        else:
            full[y0:y1, x0:x1] = rng.random((y1 - y0, x1 - x0)) < 0.7
        if full.any():
            masks.append(Mask.from_full(full))
    if len(masks) > 1 and rng.random() < 0.3:
        masks.append(Mask.from_full(masks[0].full()))  # an exact duplicate: equal areas
    return masks


def reference_residuals(masks: list[Mask]) -> list[np.ndarray]:
    """The reference approach: sort by area, each full mask minus everything taken before."""
    order = sorted(range(len(masks)), key=lambda i: masks[i].area)
    taken = np.zeros((masks[0].height, masks[0].width), bool)
    residuals = []
    for index in order:
        full = masks[index].full()
        residuals.append(full & ~taken)
        taken |= full
    return residuals


def reference_position(residual: np.ndarray) -> tuple[int, int]:
    """(row, col) by the reference: EDT of the zero-padded full mask, middle of the maxima."""
    distance = ndimage.distance_transform_edt(np.pad(residual, 1))[1:-1, 1:-1]
    rows, cols = np.where(distance == distance.max())
    return int(rows[len(rows) // 2]), int(cols[len(cols) // 2])
