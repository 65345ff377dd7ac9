"""Masks from COCO instance annotations, carrying category names.

This is how `som mark --masks COCO.json` works and how the data stage uses ground truth:
an annotation file stands in for a segmenter. Polygons are rasterised (with pycocotools, on
their bounding box) directly at the size of the image being marked, with no full-resolution
detour; RLE annotations are decoded with pycocotools and resized with nearest neighbour.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import cv2
import numpy as np

from som.segment.base import register
from som.segment.mask import Mask

@dataclass(frozen=True)
class CocoParams:
    annotations: str = ""
    include_crowd: bool = True
    min_area: int = 0


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
        from som import storage

        try:
            data = json.loads(storage.read_bytes(str(path)))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"cannot read COCO annotations {path}: {exc}") from exc
        if not isinstance(data, dict) or "images" not in data:
            raise ValueError(f"{path} is not a COCO instances file (no 'images' list)")
        return cls(data)

    def lookup(self, source: str) -> dict[str, Any] | None:
        """The image record for a file path or URI, matched by file name."""
        return self.images_by_name.get(source) or self.images_by_name.get(
            PurePosixPath(source.replace("\\", "/")).name
        )

    def masks_for(
        self, record: dict[str, Any], height: int, width: int, *, include_crowd: bool = True
    ) -> list[Mask]:
        """Masks of one image's annotations, rasterised at height x width."""
        scale_x = width / record["width"]
        scale_y = height / record["height"]
        masks = []
        for ann in self.annotations_by_image.get(record["id"], []):
            if ann.get("iscrowd") and not include_crowd:
                continue
            segmentation = ann.get("segmentation")
            if not segmentation:
                continue
            if isinstance(segmentation, list):
                mask = _polygons_to_mask(segmentation, scale_x, scale_y, height, width)
            else:
                mask = _rle_to_mask(segmentation, record, height, width)
            if mask is None:
                continue
            category = self.categories.get(ann.get("category_id"))
            masks.append(
                Mask(mask.crop, mask.x0, mask.y0, height, width, ann.get("score"), category)
            )
        return masks


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
    segmentation: dict[str, Any], record: dict[str, Any], height: int, width: int
) -> Mask | None:
    from pycocotools import mask as mask_utils

    rle = segmentation
    if isinstance(rle.get("counts"), list):
        rle = mask_utils.frPyObjects(rle, record["height"], record["width"])
    full = mask_utils.decode(rle).astype(np.uint8)
    if full.shape != (height, width):
        full = cv2.resize(full, (width, height), interpolation=cv2.INTER_NEAREST)
    mask = Mask.from_full(full.astype(bool))
    return mask if mask.area else None


class CocoSegmenter:
    """Returns the annotated objects of the image named by `source`."""

    name = "coco"

    def __init__(self, params: CocoParams, index: CocoIndex | None = None) -> None:
        if index is None:
            if not params.annotations:
                raise ValueError("the coco segmenter needs annotations=<path to instances JSON>")
            index = CocoIndex.load(params.annotations)
        self.params = params
        self.index = index

    def generate(self, image: np.ndarray, *, source: str | None = None) -> list[Mask]:
        record = self.index.lookup(source or "")
        if record is None:
            raise LookupError(f"{source} is not listed in {self.params.annotations or 'the COCO file'}")
        height, width = image.shape[:2]
        masks = self.index.masks_for(
            record, height, width, include_crowd=self.params.include_crowd
        )
        return [m for m in masks if m.area > self.params.min_area]

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "params": {
                "annotations": Path(self.params.annotations).name if self.params.annotations else None,
                "include_crowd": self.params.include_crowd,
                "min_area": self.params.min_area,
            },
        }


@register("coco", CocoParams, "masks and categories from a COCO instances JSON (annotations=PATH)")
def _build_coco(params: CocoParams) -> CocoSegmenter:
    return CocoSegmenter(params)
