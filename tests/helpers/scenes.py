"""Constructed scenes for the instruction-data tests: rectangles with known names and layout.

Marks JSON comes from the real marker (`mark_image`), so tests read tags the way the data
stage does; the rectangles themselves are the independent truth the answers are checked by.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from som.mark import MarkOptions, mark_image
from som.segment.mask import Mask

HEIGHT, WIDTH = 200, 320


@dataclass(frozen=True)
class Box:
    """A named rectangle [x0, x1) x [y0, y1); name None for an object nobody named."""

    name: str | None
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def area(self) -> int:
        return (self.x1 - self.x0) * (self.y1 - self.y0)

    @property
    def centre(self) -> tuple[float, float]:
        return ((self.x0 + self.x1 - 1) / 2, (self.y0 + self.y1 - 1) / 2)

    def mask(self, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
        full = np.zeros((height, width), bool)
        full[self.y0 : self.y1, self.x0 : self.x1] = True
        return full


# No two boxes overlap, so each tag's residual is its whole box. Areas are all different, so
# the tag order (area ascending) is: ball, cup, dog(left), dog(right), unnamed, table, person.
SCENE = (
    Box("dog", 10, 20, 50, 60),  # 1600 px, far left
    Box("dog", 250, 20, 300, 60),  # 2000 px, far right: 1.25x the other dog, size too close to call
    Box("person", 125, 40, 175, 190),  # 7500 px
    Box("ball", 181, 170, 193, 180),  # 120 px, 7 px right of the person: near it
    Box("table", 20, 120, 100, 160),  # 3200 px
    Box("cup", 70, 105, 90, 120),  # 300 px, sits on the table (touching), inside its x extent
    Box(None, 230, 130, 290, 180),  # 3000 px, unnamed
)


def scene_marks(boxes: tuple[Box, ...] = SCENE, *, sha_seed: str = "scene") -> dict:
    """Marks JSON of `boxes` on a grey image, with categories from the box names."""
    image = np.full((HEIGHT, WIDTH, 3), 128, np.uint8)
    masks = [Mask.from_full(b.mask(), category=b.name) for b in boxes]
    result = mark_image(image, masks, MarkOptions())
    return {
        "image": f"photos/{sha_seed}.jpg",
        "sha256": hashlib.sha256(sha_seed.encode()).hexdigest(),
        "width": WIDTH,
        "height": HEIGHT,
        "scale": 1.0,
        "segmenter": {"name": "test", "params": {}},
        "marks": result.marks,
    }


def box_of_tag(marks: dict, boxes: tuple[Box, ...] = SCENE) -> dict[int, Box]:
    """Which box each tag marks, found by its bbox."""
    by_bbox = {(b.x0, b.y0, b.x1 - b.x0, b.y1 - b.y0): b for b in boxes}
    return {m["id"]: by_bbox[tuple(m["bbox"])] for m in marks["marks"]}
