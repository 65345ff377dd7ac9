"""Where a tag goes: the innermost point of its residual mask.

Reference behaviour (SoM-LLaVA's annotator): exact Euclidean distance transform of the
residual zero-padded by one pixel (so the image border counts as outside), then the middle,
in row-major order, of all pixels at the maximum distance. Working on the residual's bounding
box crop plus the padding gives the same distances as the full image: clamping any outside
pixel onto the padding ring only brings it closer to every pixel inside the box.
"""

from __future__ import annotations

import cv2
import numpy as np


def innermost_point(residual: np.ndarray) -> tuple[int, int]:
    """(row, col) within `residual` (a boolean crop) where the tag is centred."""
    padded = cv2.copyMakeBorder(residual.view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    _, peak, _, _ = cv2.minMaxLoc(distance)
    ties = np.flatnonzero(distance.ravel() == peak)  # row-major, like np.where
    row, col = divmod(int(ties[len(ties) // 2]), padded.shape[1])
    return row - 1, col - 1


def tight_box(crop: np.ndarray) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1), end exclusive, of the True pixels of a non-empty crop."""
    rows = np.flatnonzero(crop.any(axis=1))
    cols = np.flatnonzero(crop.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1
