"""Where a tag goes: the innermost point of its residual mask.

Reference behaviour (SoM-LLaVA's annotator): `cv2.distanceTransform(padded, DIST_L2, 0)` of
the full-image residual zero-padded by one pixel (so the image border counts as outside),
then the middle, in row-major order, of all pixels at the maximum distance.

Working on the residual's tight crop plus the padding gives the same exact distances as the
full image: clamping any outside pixel onto the padding ring only brings it closer to every
pixel inside the box. The float values are another matter. OpenCV hands a precise L2 transform
to IPP when the image has under 16384 pixels (or when it runs on one thread, as our workers
do), and IPP rounds position-dependently: two pixels at the same exact distance can come out
one ulp apart, which splits a tie and moves the tag (SoM-LLaVA's full-size images take
OpenCV's own pass, whose values are the correctly rounded sqrt of the integer squared
distance). So placement disables IPP for the call and compares ties by integer squared
distance, which is exactly how the reference's float ties fall (float32 sqrt stays one-to-one
on integers below 4.19e6, i.e. for any residual less than ~4096 px across).
"""

from __future__ import annotations

import cv2
import numpy as np

# Far above any kernel's rounding error in a distance, so every exact tie is a candidate;
# candidates that are not ties are then told apart by their integer squared distance.
_TIE_SLACK = 1.0 / 1024


def exact_distance(mask: np.ndarray) -> np.ndarray:
    """Float32 EDT of a uint8 mask through OpenCV's own pass, never IPP's (see module doc)."""
    previous = cv2.ipp.useIPP()  # the flag is per thread, so this touches no other caller
    cv2.ipp.setUseIPP(False)
    try:
        return cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    finally:
        cv2.ipp.setUseIPP(previous)


def innermost_point(residual: np.ndarray) -> tuple[int, int]:
    """(row, col) within `residual` (a boolean crop) where the tag is centred."""
    padded = cv2.copyMakeBorder(residual.view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    flat = exact_distance(padded).ravel()
    _, peak, _, _ = cv2.minMaxLoc(flat)
    near = np.flatnonzero(flat >= np.float32(peak - _TIE_SLACK))  # row-major, like np.where
    squared = np.rint(np.square(flat[near], dtype=np.float64))
    ties = near[squared == squared.max()]
    row, col = divmod(int(ties[len(ties) // 2]), padded.shape[1])
    return row - 1, col - 1


def tight_box(crop: np.ndarray) -> tuple[int, int, int, int]:
    """(row0, col0, row1, col1), end exclusive, of the True pixels of a non-empty crop."""
    rows = np.flatnonzero(crop.any(axis=1))
    cols = np.flatnonzero(crop.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1
