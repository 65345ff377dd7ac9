"""Masks from COCO instance annotations, carrying category names.

This is how `som mark --masks COCO.json` works and how the data stage uses ground truth:
an annotation file stands in for a segmenter. Polygons are rasterised (with pycocotools, on
their bounding box) directly at the size of the image being marked, with no full-resolution
detour; RLE annotations are decoded with pycocotools and resized with nearest neighbour.

The image must be the one the annotations describe: the same size, or a uniform resize of it
(`som mark`'s short-side resize). Anything else (a half-size copy, a different aspect ratio,
an EXIF-rotated photo whose record gives the stored, unrotated size) is a per-image
`CocoImageError` naming both sizes, because silently stretching masks onto the wrong pixels
gives wrong ground truth. `rescale=true` asks for the old stretch-to-fit instead.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from som import storage
from som.segment.mask import Mask
from som.settings import Settings


class CocoImageError(LookupError, ValueError):
    """One image's annotations cannot be used (size mismatch, malformed record or polygon).

    A LookupError so that `som mark` quarantines the image and the dataset flow writes a
    `failed` manifest row with this reason, as for an image missing from the file.
    """


class CocoParams(Settings):
    annotations: str = ""
    include_crowd: bool = True
    min_area: int = 0
    rescale: bool = False  # stretch masks to an image whose size disagrees with the record


class CocoIndex:
    """Image records, annotations and category names of one COCO instances file."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.categories = {c["id"]: c["name"] for c in data.get("categories", [])}
        self.images_by_name: dict[str, dict[str, Any]] = {}
        for record in data.get("images", []):
            self.images_by_name[record["file_name"]] = record
            self.images_by_name.setdefault(PurePosixPath(record["file_name"]).name, record)
        self.annotations_by_image: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for ann in data.get("annotations", []):
            self.annotations_by_image[ann["image_id"]].append(ann)

    @classmethod
    def load(cls, path: str | Path) -> CocoIndex:
        """Read an instances file from a path or any storage URL (s3://, file://)."""
        try:
            data = json.loads(storage.read_bytes(str(path)))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read COCO annotations {path}: {exc}") from exc
        if not isinstance(data, dict) or "images" not in data:
            raise ValueError(f"{path} is not a COCO instances file (no 'images' list)")
        return cls(data)

    def lookup(self, source: str) -> dict[str, Any] | None:
        """The image record for a file path or URI, matched by file name."""
        return self.images_by_name.get(source) or self.images_by_name.get(PurePosixPath(source.replace("\\", "/")).name)

    def masks_for(
        self,
        record: dict[str, Any],
        height: int,
        width: int,
        *,
        include_crowd: bool = True,
        rescale: bool = False,
        original_size: tuple[int, int] | None = None,
    ) -> list[Mask]:
        """Masks of one image's annotations, rasterised at height x width.

        `original_size` (height, width) is the image's size before any resize; when given it
        must equal the record's size exactly. Raises CocoImageError on a mismatch unless
        `rescale`, and on a record or annotation a user must fix.
        """
        record_height, record_width = record_size(record)
        if not rescale:
            check_size(record, (record_height, record_width), (height, width), original_size)
        scale_x = width / record_width
        scale_y = height / record_height
        masks = []
        for ann in self.annotations_by_image.get(record["id"], []):
            if ann.get("iscrowd") and not include_crowd:
                continue
            segmentation = ann.get("segmentation")
            if not segmentation:
                continue
            if isinstance(segmentation, list):
                mask = _polygons_to_mask(_numeric_polygons(segmentation, ann, record), scale_x, scale_y, height, width)
            else:
                mask = _rle_to_mask(segmentation, ann, record, height, width, rescale)
            if mask is None:
                continue
            category = self.categories.get(ann.get("category_id"))
            masks.append(Mask(mask.crop, mask.x0, mask.y0, height, width, ann.get("score"), category))
        return masks


def _name(record: dict[str, Any]) -> str:
    return str(record.get("file_name", record.get("id", "?")))


def record_size(record: dict[str, Any]) -> tuple[int, int]:
    """(height, width) of an image record; a clear error when missing, zero or not a number."""
    sizes = []
    for key in ("height", "width"):
        value = record.get(key)
        if value is None:
            raise CocoImageError(f"COCO image record {_name(record)} has no {key!r}")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise CocoImageError(f"COCO image record {_name(record)} has a non-numeric {key!r}: {value!r}") from None
        if number <= 0 or number != value:
            raise CocoImageError(
                f"COCO image record {_name(record)} has {key} {value!r}; it must be a positive integer"
            )
        sizes.append(number)
    return sizes[0], sizes[1]


def check_size(
    record: dict[str, Any],
    record_hw: tuple[int, int],
    image_hw: tuple[int, int],
    original_hw: tuple[int, int] | None = None,
) -> None:
    """Raise CocoImageError unless the image is the annotated one, at most uniformly resized.

    With the pre-resize size known it must match exactly; without it, the resized image must
    keep the record's aspect ratio within a pixel (the short-side resize truncates the long
    side), which still catches stretched and rotated images but not a uniformly scaled copy.
    """
    rh, rw = record_hw
    if original_hw is not None:
        ok = tuple(original_hw) == (rh, rw)
        shown_h, shown_w = original_hw
    else:
        h, w = image_hw
        ok = (h, w) == (rh, rw) or abs(rw * h / rh - w) <= 1 or abs(rh * w / rw - h) <= 1
        shown_h, shown_w = h, w
    if ok:
        return
    hint = ""
    if (shown_h, shown_w) == (rw, rh):
        hint = (
            " (the width and height are swapped: the photo is probably EXIF-rotated, which "
            "somflow applies, while the record gives the stored, unrotated size)"
        )
    elif original_hw is None:
        hint = " (after the marking resize, so the aspect ratios differ)"
    raise CocoImageError(
        f"{_name(record)}: masks are {rw}x{rh} but the image is {shown_w}x{shown_h}{hint}; "
        "fix the COCO file or pass rescale=true to stretch the masks to the image"
    )


def _numeric_polygons(polygons: list[Any], ann: dict[str, Any], record: dict[str, Any]) -> list[list[float]]:
    """Polygon coordinates as floats; a clear error naming the annotation otherwise."""
    out = []
    for flat in polygons:
        if not isinstance(flat, list):
            raise CocoImageError(
                f"{_name(record)}: annotation {ann.get('id')} has a polygon that is not a list of numbers: {flat!r:.60}"
            )
        try:
            out.append([float(v) for v in flat])
        except (TypeError, ValueError):
            bad = next(v for v in flat if not _is_number(v))
            raise CocoImageError(
                f"{_name(record)}: annotation {ann.get('id')} has a non-numeric polygon coordinate {bad!r}"
            ) from None
        if not all(math.isfinite(v) for v in out[-1]):
            raise CocoImageError(f"{_name(record)}: annotation {ann.get('id')} has a non-finite polygon coordinate")
    return out


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return not isinstance(value, bool)


def _polygons_to_mask(
    polygons: list[list[float]], scale_x: float, scale_y: float, height: int, width: int
) -> Mask | None:
    # Rasterised with pycocotools (as COCO's own annToMask), but only over the polygons'
    # bounding box. (cv2.fillPoly also fills the pixels its outline touches, which grew every
    # mask by about half a pixel all round: +10% area for a 20x20 square.)
    from pycocotools import mask as mask_utils

    flats = [flat for flat in polygons if len(flat) >= 6]
    if not flats:
        return None
    points = np.array([v for flat in flats for v in flat], dtype=np.float64).reshape(-1, 2)
    points *= (scale_x, scale_y)
    x0 = max(0, math.floor(points[:, 0].min()))
    y0 = max(0, math.floor(points[:, 1].min()))
    x1 = min(width, math.ceil(points[:, 0].max()) + 1)
    y1 = min(height, math.ceil(points[:, 1].max()) + 1)
    if x1 <= x0 or y1 <= y0:
        return None
    # pycocotools snaps vertices to a 1/5 px grid, int(5 * v + 0.5). Snapping here, in image
    # coordinates, before the integer shift to the crop keeps the crop equal to the full-image
    # mask (shifting first moves some vertices across a rounding boundary; what remains is a
    # 1-pixel difference in ~1 of 2,000 masks, from pycocotools' float rounding of edges).
    # An axis with origin 0 is not shifted, so its (possibly negative) values stay as given.
    for axis, origin in ((0, x0), (1, y0)):
        if origin:
            points[:, axis] = (np.floor(points[:, axis] * 5 + 0.5) - 5 * origin) / 5
    values = points.ravel().tolist()
    local, start = [], 0
    for flat in flats:
        local.append(values[start : start + len(flat)])
        start += len(flat)
    rles = mask_utils.frPyObjects(local, y1 - y0, x1 - x0)
    rle = rles[0] if len(rles) == 1 else mask_utils.merge(rles)
    crop = np.ascontiguousarray(mask_utils.decode(rle), dtype=bool)
    return Mask(crop, x0, y0, height, width) if crop.any() else None


def _rle_to_mask(
    segmentation: dict[str, Any],
    ann: dict[str, Any],
    record: dict[str, Any],
    height: int,
    width: int,
    rescale: bool = False,
) -> Mask | None:
    from pycocotools import mask as mask_utils

    record_hw = record_size(record)
    rle = segmentation
    size = rle.get("size") if isinstance(rle, dict) else None
    if not isinstance(size, list | tuple) or len(size) != 2 or "counts" not in rle:
        raise CocoImageError(
            f"{_name(record)}: annotation {ann.get('id')} has a segmentation that is neither "
            "polygons nor an RLE with 'size' and 'counts'"
        )
    if tuple(size) != record_hw and not rescale:
        raise CocoImageError(
            f"{_name(record)}: annotation {ann.get('id')}: masks are {size[1]}x{size[0]} but the "
            f"image is {record_hw[1]}x{record_hw[0]} (its COCO record); fix the COCO file or "
            "pass rescale=true"
        )
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, int(size[0]), int(size[1]))
    elif isinstance(rle.get("counts"), str):
        rle = {"size": list(size), "counts": rle["counts"].encode("ascii")}
    try:
        full = mask_utils.decode(rle).astype(np.uint8)
    except (TypeError, ValueError) as exc:
        raise CocoImageError(f"{_name(record)}: annotation {ann.get('id')} has an unreadable RLE: {exc}") from exc
    if full.shape != (height, width):
        full = cv2.resize(full, (width, height), interpolation=cv2.INTER_NEAREST)
    mask = Mask.from_full(full.astype(bool))
    return mask if mask.area else None


class CocoSegmenter:
    """Returns the annotated objects of the image named by `source`."""

    name = "coco"
    # annotate() passes the size before the marking resize, so check_size is exact: a resized
    # copy of the image cannot tell a half-size file from the annotated one.
    takes_original_size = True

    def __init__(self, params: CocoParams, index: CocoIndex | None = None) -> None:
        if index is None:
            if not params.annotations:
                raise ValueError("the coco segmenter needs annotations=<path to instances JSON>")
            index = CocoIndex.load(params.annotations)
        self.params = params
        self.index = index

    def generate(
        self,
        image: np.ndarray,
        *,
        source: str | None = None,
        original_size: tuple[int, int] | None = None,
    ) -> list[Mask]:
        """Masks for `source`; `original_size` (h, w) before any resize makes the size check exact."""
        record = self.index.lookup(source or "")
        if record is None:
            raise LookupError(f"{source} is not listed in {self.params.annotations or 'the COCO file'}")
        height, width = image.shape[:2]
        masks = self.index.masks_for(
            record,
            height,
            width,
            include_crowd=self.params.include_crowd,
            rescale=self.params.rescale,
            original_size=original_size,
        )
        return [m for m in masks if m.area > self.params.min_area]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": {
                "annotations": Path(self.params.annotations).name if self.params.annotations else None,
                "include_crowd": self.params.include_crowd,
                "min_area": self.params.min_area,
                **({"rescale": True} if self.params.rescale else {}),
            },
        }
