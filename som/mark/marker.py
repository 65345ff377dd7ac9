"""Set-of-Mark for one image: ownership, tag placement, drawing and per-tag metadata."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from som.mark import rle
from som.mark.draw import TagShape, draw_tags
from som.mark.labels import tag_label
from som.mark.options import MarkOptions
from som.mark.ownership import Ownership, assign_ownership
from som.mark.placement import innermost_point, tight_box
from som.segment.mask import Mask


@dataclass(frozen=True)
class MarkResult:
    """The drawn image and one metadata record per tag (ids 1..N in tag order)."""

    image: np.ndarray
    marks: list[dict[str, Any]]
    skipped: str | None = None
    tags: list[TagShape] = field(default_factory=list, repr=False)


def place_tags(
    masks: Sequence[Mask], ownership: Ownership, options: MarkOptions
) -> tuple[list[TagShape], list[dict[str, Any]]]:
    """Tag every mask whose residual has at least `min_tag_area` pixels, smallest first."""
    height, width = ownership.owner.shape
    shapes: list[TagShape] = []
    records: list[dict[str, Any]] = []
    for rank, index in enumerate(ownership.order):
        if ownership.residual_area[rank] < max(1, options.min_tag_area):
            continue
        mask = masks[index]
        residual = ownership.residual_crop(rank, mask)
        r0, c0, r1, c1 = tight_box(residual)
        tight = residual[r0:r1, c0:c1]
        row, col = innermost_point(tight)
        x0, y0 = mask.x0 + c0, mask.y0 + r0
        number = len(shapes) + 1
        label = tag_label(number, options.label_mode)
        position = (x0 + col, y0 + row)
        shapes.append(TagShape(rank, label, position, (x0, y0, x0 + c1 - c0, y0 + r1 - r0)))
        records.append(
            {
                "id": number,
                "label": label,
                "bbox": [x0, y0, c1 - c0, r1 - r0],
                "area": int(ownership.residual_area[rank]),
                "position": list(position),
                "score": None if mask.score is None else round(float(mask.score), 4),
                "category": mask.category,
                "segmentation": rle.encode_counts(rle.crop_runs(tight, x0, y0, height, width), height, width),
            }
        )
    return shapes, records


def mark_image(image: np.ndarray, masks: Sequence[Mask], options: MarkOptions) -> MarkResult:
    """Mark `image` (already at marking size) with `masks` of the same size."""
    height, width = image.shape[:2]
    for mask in masks:
        if (mask.height, mask.width) != (height, width):
            raise ValueError(f"mask size {mask.height}x{mask.width} does not match image {height}x{width}")
    if not masks:
        return MarkResult(image, [], skipped="the segmenter returned no masks")
    ownership = assign_ownership(masks, height, width)
    shapes, records = place_tags(masks, ownership, options)
    if not shapes:
        return MarkResult(image, [], skipped=f"no mask kept a residual of at least {options.min_tag_area} px")
    drawn = draw_tags(image, ownership.owner, shapes, options)
    return MarkResult(drawn, records, tags=shapes)
