"""Tag placement: speed and parity with SoM-LLaVA's full-image distance transform.

    python benchmarks/placement_parity.py                 # 20 images x 100 masks, 640x853
    python benchmarks/placement_parity.py --images 50 --masks 150

Each variant runs `place_tags` (ownership excluded) with a different `innermost_point`:
  before      residual's tight crop + 1 px padding, OpenCV's default dispatch (IPP on crops
              under 16384 px, whose float rounding splits ties)
  after       som.mark.placement.innermost_point (crop, OpenCV's exact pass, integer ties)
  full image  SoM-LLaVA's own computation: EDT of the whole zero-padded residual
`mismatches` counts tags whose position differs from the reference: SoM-LLaVA's
computation on the full image with OpenCV's exact pass, as on any multi-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from synthetic_coco import random_polygon  # noqa: E402

from som.mark import marker  # noqa: E402
from som.mark.options import MarkOptions  # noqa: E402
from som.mark.ownership import Ownership, assign_ownership  # noqa: E402
from som.mark.placement import innermost_point  # noqa: E402
from som.segment.mask import Mask  # noqa: E402

Point = tuple[int, int]
Variant = Callable[[np.ndarray], Point] | None  # None: the full-image reference


def before(residual: np.ndarray) -> Point:
    """The placement as it was: crop + padding through OpenCV's default dispatch."""
    padded = cv2.copyMakeBorder(residual.view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    distance = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    _, peak, _, _ = cv2.minMaxLoc(distance)
    ties = np.flatnonzero(distance.ravel() == peak)
    row, col = divmod(int(ties[len(ties) // 2]), padded.shape[1])
    return row - 1, col - 1


def full_image_position(residual: np.ndarray) -> Point:
    """SoM-LLaVA: EDT of the full residual padded by 1 px, middle of np.where's maxima."""
    padded = cv2.copyMakeBorder(residual.view(np.uint8), 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    previous = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)  # what a multi-core machine runs on a full-size image
    try:
        distance = cv2.distanceTransform(padded, cv2.DIST_L2, 0)
    finally:
        cv2.ipp.setUseIPP(previous)
    rows, cols = np.where(distance == distance.max())
    middle = len(rows) // 2
    return int(rows[middle]) - 1, int(cols[middle]) - 1


def sam_like_masks(rng: np.random.Generator, count: int, height: int, width: int) -> list[Mask]:
    """Overlapping star polygons of mixed sizes, plus a few boxes (exact ties) and frames."""
    masks = []
    for index in range(count):
        full = np.zeros((height, width), np.uint8)
        if index % 10 == 0:
            y0, x0 = int(rng.integers(0, height - 20)), int(rng.integers(0, width - 20))
            full[y0 : y0 + int(rng.integers(10, 200)), x0 : x0 + int(rng.integers(10, 200))] = 1
            if index % 20 == 0:
                full[y0 + 5 : y0 + 10, x0 + 5 : x0 + 10] = 0
        else:
            points = np.asarray(random_polygon(rng, width, height)).reshape(-1, 2)
            cv2.fillPoly(full, [np.round(points).astype(np.int32)], 1)
        if full.any():
            masks.append(Mask.from_full(full.astype(bool)))
    return masks


def full_image_place(masks: list[Mask], ownership: Ownership) -> list[Point]:
    """Reference positions (x, y) for every tag `place_tags` would draw."""
    positions = []
    for rank in range(len(ownership.order)):
        if ownership.residual_area[rank] >= max(1, MarkOptions().min_tag_area):
            row, col = full_image_position(ownership.owner == rank + 1)
            positions.append((col, row))
    return positions


def place(variant: Variant, masks: list[Mask], ownership: Ownership) -> list[Point]:
    """Tag positions (x, y) from `place_tags` with `variant`, or from the full-image reference."""
    if variant is None:
        return full_image_place(masks, ownership)
    marker.innermost_point = variant
    try:
        shapes, _ = marker.place_tags(masks, ownership, MarkOptions())
    finally:
        marker.innermost_point = innermost_point
    return [shape.position for shape in shapes]


def run(variants: dict[str, Variant], cases: list, reference: list, repeats: int) -> dict[str, tuple[float, int, int]]:
    """Per variant: median over images of the best-of-`repeats` ms, and tags off the reference.

    Variants take turns on each image, so load from other processes hits them alike.
    """
    best = {name: [float("inf")] * len(cases) for name in variants}
    off = dict.fromkeys(variants, 0)
    for _ in range(repeats):
        for index, (masks, ownership) in enumerate(cases):
            for name, variant in variants.items():
                clock = time.perf_counter()
                got = place(variant, masks, ownership)
                best[name][index] = min(best[name][index], time.perf_counter() - clock)
                off[name] += sum(a != b for a, b in zip(got, reference[index], strict=False))
    tags = sum(map(len, reference)) * repeats
    return {name: (statistics.median(best[name]) * 1000, off[name], tags) for name in variants}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20)
    parser.add_argument("--masks", type=int, default=100)
    parser.add_argument("--height", type=int, default=640)
    parser.add_argument("--width", type=int, default=853)
    parser.add_argument("--repeats", type=int, default=3, help="timed passes; the best counts")
    parser.add_argument("--threads", type=int, default=0, help="cv2.setNumThreads; 0: default")
    args = parser.parse_args()
    if args.threads:
        cv2.setNumThreads(args.threads)
    rng = np.random.default_rng(0)
    cases = []
    for _ in range(args.images):
        masks = sam_like_masks(rng, args.masks, args.height, args.width)
        cases.append((masks, assign_ownership(masks, args.height, args.width)))
    reference = [full_image_place(masks, ownership) for masks, ownership in cases]
    print(
        f"placement per image, {args.images} images {args.height}x{args.width}, "
        f"{args.masks} masks, cv2 {cv2.__version__}, {cv2.getNumThreads()} threads"
    )
    print("| variant | ms/image (median of best) | tags off the reference (all repeats) |")
    print("|---|---|---|")
    variants = {"before": before, "after": innermost_point, "full image": None}
    for name, (ms, off, tags) in run(variants, cases, reference, args.repeats).items():
        print(f"| {name} | {ms:.2f} | {off} / {tags} |")


if __name__ == "__main__":
    main()
