"""COCO RLE of residual masks, encoded straight from the ownership map.

COCO RLE runs over pixels in column-major order. A residual spanning columns x0..x1 is zero
in every other column, so its runs are x0*H leading zeros, the runs of the H x (x1-x0) column
strip, and trailing zeros: no full-image mask is ever built.
"""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils


def strip_runs(strip: np.ndarray, x0: int, width: int) -> list[int]:
    """Uncompressed COCO counts of an image that is zero outside columns x0..x0+strip width."""
    height, strip_width = strip.shape
    flat = strip.T.ravel()
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    runs = np.diff(np.concatenate(([0], changes, [flat.size]))).tolist()
    if flat.size and flat[0]:
        runs.insert(0, 0)
    runs[0] += x0 * height
    trailing = (width - x0 - strip_width) * height
    if trailing:
        if len(runs) % 2 == 1:  # runs alternate zeros/ones from index 0: odd length ends on zeros
            runs[-1] += trailing
        else:
            runs.append(trailing)
    return runs


def encode_counts(runs: list[int], height: int, width: int) -> dict:
    """Compress uncompressed counts into the JSON form {"size": [h, w], "counts": str}."""
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": runs}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def decode(rle: dict) -> np.ndarray:
    """HxW boolean array of a JSON RLE (for tests and consumers)."""
    compressed = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return mask_utils.decode(compressed).astype(bool)
