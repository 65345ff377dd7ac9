"""Names for the tags of a marks JSON, from COCO ground truth or the segmenter's own category.

A tag stands for its residual mask (the pixels its mask kept after smaller masks took
theirs). With the `coco` segmenter every tag already carries its category and that name is
used as is ("segmenter-category"). Otherwise each tag's residual is compared with the
image's COCO instance masks, rasterised at the marked image's size, by mask IoU; a tag and a
ground-truth instance are paired one to one and the pair is kept when its IoU reaches the
threshold ("coco-gt"). Tags left without a name are unlabeled (`name is None`): listings drop
them or a later source (a describer) fills them in.

Why Hungarian assignment (scipy's linear_sum_assignment) rather than greedy by IoU: the
result is the pairing with the largest total IoU, independent of processing order, and it
costs nothing extra at tens of masks. At a threshold of 0.5 or more the two agree (residuals
are disjoint, so no instance can exceed IoU 0.5 with two tags); below 0.5 greedy can give an
instance to the tag that overlaps it best and leave a second tag, whose only good match
that was, unnamed, while the assignment names both when another pairing exists.

IoU is computed by pycocotools on run-length encodings (both the tags' RLE strings and the
instances' crops, encoded without building full-image masks), so an image with a hundred
tags and instances never holds a hundred full-size boolean arrays.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils
from scipy.optimize import linear_sum_assignment

from som.mark import rle
from som.segment.coco import CocoIndex
from som.segment.mask import Mask

log = logging.getLogger(__name__)

SOURCE_COCO_GT = "coco-gt"
SOURCE_SEGMENTER = "segmenter-category"


@dataclass(frozen=True)
class NamingConfig:
    """Arguments:
    iou_threshold: a tag takes an instance's category only when their mask IoU reaches this.
    include_crowd: also match COCO crowd regions (off: one crowd region spans many objects,
      so its category names a group, not the tagged object).
    use_segmenter_category: name tags from the category the marks JSON already carries.
    """

    iou_threshold: float = 0.5
    include_crowd: bool = False
    use_segmenter_category: bool = True

    def __post_init__(self) -> None:
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")


@dataclass(frozen=True)
class TagName:
    """The name of one tag and where it came from (name and source are None when unlabeled)."""

    tag: int
    label: str
    name: str | None
    source: str | None
    iou: float | None = None
    annotation_id: Any = None
    description: str | None = None

    @property
    def labeled(self) -> bool:
        return self.name is not None


@dataclass(frozen=True)
class TagNames:
    """Names of every tag of one marked image, in tag order."""

    image: str
    sha256: str
    tags: tuple[TagName, ...]

    def by_id(self) -> dict[int, TagName]:
        return {t.tag: t for t in self.tags}

    def source_counts(self) -> dict[str, int]:
        """Tags per name source, unlabeled ones under "unlabeled"."""
        return dict(Counter(t.source or "unlabeled" for t in self.tags))


Names = TagNames | Mapping[int, TagName]
"""What the record builders accept: an image's `TagNames`, or its names by tag id."""


def names_by_id(names: Names) -> dict[int, TagName]:
    return names.by_id() if isinstance(names, TagNames) else dict(names)


def name_tags(
    marks: Mapping[str, Any],
    index: CocoIndex | None = None,
    config: NamingConfig = NamingConfig(),
    *,
    source: str | None = None,
) -> TagNames:
    """Name the tags of one marks JSON.

    `index` holds the ground truth; the image is looked up by `source` (default: the marks
    JSON's "image"). Without an index only segmenter categories name tags.
    Raises LookupError when ground truth is needed but the image is not in the index.
    """
    tags = list(marks.get("marks") or [])
    named: dict[int, TagName] = {}
    pending: list[Mapping[str, Any]] = []
    for mark in tags:
        category = mark.get("category")
        if config.use_segmenter_category and category:
            named[mark["id"]] = TagName(mark["id"], str(mark["label"]), str(category), SOURCE_SEGMENTER)
        else:
            pending.append(mark)
    if pending and index is not None:
        named.update(_match_ground_truth(marks, pending, index, config, source))
    result = tuple(named.get(m["id"]) or TagName(m["id"], str(m["label"]), None, None) for m in tags)
    return TagNames(str(marks.get("image", "")), str(marks.get("sha256", "")), result)


def _match_ground_truth(
    marks: Mapping[str, Any],
    pending: Sequence[Mapping[str, Any]],
    index: CocoIndex,
    config: NamingConfig,
    source: str | None,
) -> dict[int, TagName]:
    image = source or str(marks.get("image", ""))
    record = index.lookup(image)
    if record is None:
        raise LookupError(f"{image} has no image record in the COCO annotations")
    height, width = int(marks["height"]), int(marks["width"])
    instances = index.masks_for(record, height, width, include_crowd=config.include_crowd)
    annotation_ids = _annotation_ids(index, record, config.include_crowd)
    if len(annotation_ids) != len(instances):  # masks_for skipped empty ones; ids unknowable
        annotation_ids = [None] * len(instances)
    if not instances:
        return {}
    iou = mask_iou([_tag_rle(m, height, width) for m in pending], [_instance_rle(i) for i in instances])
    named = {}
    for row, col in match_by_iou(iou, config.iou_threshold):
        mark = pending[row]
        named[mark["id"]] = TagName(
            mark["id"],
            str(mark["label"]),
            instances[col].category,
            SOURCE_COCO_GT,
            iou=round(float(iou[row, col]), 4),
            annotation_id=annotation_ids[col],
        )
    log.debug("%s: %d of %d tags matched to %d instances", image, len(named), len(pending), len(instances))
    return named


def match_by_iou(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """One-to-one (row, col) pairs maximising total IoU, each with IoU >= threshold.

    Pairs under the threshold are given zero weight before the assignment, so a weak pair
    never displaces a strong one; they are then dropped."""
    if iou.size == 0:
        return []
    weights = np.where(iou >= threshold, iou, 0.0)
    rows, cols = linear_sum_assignment(weights, maximize=True)
    return sorted((int(r), int(c)) for r, c in zip(rows, cols, strict=False) if iou[r, c] >= threshold)


def mask_iou(tag_rles: list[dict[str, Any]], instance_rles: list[dict[str, Any]]) -> np.ndarray:
    """tags x instances IoU matrix of compressed pycocotools RLEs."""
    if not tag_rles or not instance_rles:
        return np.zeros((len(tag_rles), len(instance_rles)))
    crowd = [0] * len(instance_rles)
    return np.asarray(mask_utils.iou(tag_rles, instance_rles, crowd), dtype=np.float64).reshape(
        len(tag_rles), len(instance_rles)
    )


def _tag_rle(mark: Mapping[str, Any], height: int, width: int) -> dict[str, Any]:
    counts = rle.tag_segmentation(mark, height, width)["counts"]
    return {"size": [height, width], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}


def _instance_rle(mask: Mask) -> dict[str, Any]:
    runs = rle.crop_runs(mask.crop, mask.x0, mask.y0, mask.height, mask.width)
    size = {"size": [mask.height, mask.width], "counts": runs.tolist()}
    return mask_utils.frPyObjects(size, mask.height, mask.width)


def _annotation_ids(index: CocoIndex, record: Mapping[str, Any], include_crowd: bool) -> list[Any]:
    """Ids of the annotations `masks_for` rasterises, in its order (for provenance only)."""
    return [
        ann.get("id")
        for ann in index.annotations_by_image.get(record["id"], [])
        if ann.get("segmentation") and (include_crowd or not ann.get("iscrowd"))
    ]
