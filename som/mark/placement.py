"""Where a tag goes: the innermost point of its residual mask.

Reference behaviour (SoM-LLaVA's annotator): exact Euclidean distance transform of the
residual zero-padded by one pixel (so the image border counts as outside), then the middle,
in row-major order, of all pixels at the maximum distance. Working on the residual's bounding
box crop plus the padding gives the same distances as the full image: every pixel outside the
crop is farther from an inside pixel than the padding ring is.
"""

from __future__ import annotations

import cv2
import numpy as np


def innermost_point(residual: np.ndarray) -> tuple[int, int]:
    """(row, col) within `residual` (a boolean crop) where the tag is centred."""
    padded = np.pad(residual.astype(np.uint8), 1)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    rows, cols = np.nonzero(distance == distance.max())
    middle = len(rows) // 2
    return int(rows[middle]), int(cols[middle])


def tight_box(crop: np.ndarray) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1), end exclusive, of the True pixels of a non-empty crop."""
    rows = np.flatnonzero(crop.any(axis=1))
    cols = np.flatnonzero(crop.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1
