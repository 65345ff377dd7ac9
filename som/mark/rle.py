"""COCO RLE of residual masks, computed from their bounding-box crops.

COCO RLE counts alternate zero and one runs over pixels in column-major order. Runs of a
crop at (x0, y0) map to full-image linear indices by column and row offsets; a run ending at
the bottom of one column and one starting at the top of the next are the same run in the
full image and are merged. No full-image mask is ever built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils


def crop_runs(crop: np.ndarray, x0: int, y0: int, height: int, width: int) -> np.ndarray:
    """Uncompressed COCO counts of a height x width image that is `crop` at (x0, y0)."""
    rows, cols = crop.shape
    # One column of the crop per row here, plus a zero sentinel so every run ends in its column.
    columns = np.zeros((cols, rows + 1), dtype=bool)
    columns[:, :rows] = crop.T
    flat = columns.ravel()
    edges = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    if flat[0]:
        edges = np.concatenate(([0], edges))
    start_col, start_row = np.divmod(edges[0::2], rows + 1)
    end_col, end_row = np.divmod(edges[1::2], rows + 1)
    starts = (x0 + start_col) * height + y0 + start_row
    ends = (x0 + end_col) * height + y0 + end_row
    if starts.size > 1:
        joined = starts[1:] == ends[:-1]
        starts = starts[np.concatenate(([True], ~joined))]
        ends = ends[np.concatenate((~joined, [True]))]
    bounds = np.empty(2 * starts.size + 2, dtype=np.int64)
    bounds[0], bounds[-1] = 0, height * width
    bounds[1:-1:2], bounds[2:-1:2] = starts, ends
    counts = np.diff(bounds)
    return counts[:-1] if counts[-1] == 0 else counts  # COCO writes no empty final zero run


def encode_counts(runs: np.ndarray, height: int, width: int) -> dict:
    """Compress uncompressed counts into the JSON form {"size": [h, w], "counts": str}."""
    rle = mask_utils.frPyObjects({"size": [height, width], "counts": runs.tolist()}, height, width)
    return {"size": [height, width], "counts": rle["counts"].decode("ascii")}


def decode(rle: dict) -> np.ndarray:
    """HxW boolean array of a JSON RLE (for tests and consumers)."""
    compressed = {"size": rle["size"], "counts": rle["counts"].encode("ascii")}
    return mask_utils.decode(compressed).astype(bool)


def tag_segmentation(mark: Mapping[str, Any], height: int, width: int) -> dict:
    """A marks JSON tag's RLE, checked to be there and to be `height` x `width`.

    Why check: an RLE of another size decodes to the wrong pixels without an error (a marks
    JSON from a different resize, a tag edited by hand), so naming by IoU and masking a crop
    both refuse it by name."""
    segmentation = mark.get("segmentation")
    if not segmentation or "counts" not in segmentation:
        raise ValueError(f"tag {mark.get('id')} has no segmentation RLE")
    if list(segmentation["size"]) != [height, width]:
        raise ValueError(
            f"tag {mark.get('id')} RLE size {segmentation['size']} differs from the marked image's {height}x{width}"
        )
    return segmentation
