"""Paths to the real test images in tests/data (copied from ../shared/reference/images)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SHARED_IMAGES = Path(__file__).resolve().parents[3] / "shared" / "reference" / "images"
"""The full reference set, present on development machines only (tests skip without it)."""


def data_path(name: str) -> Path:
    """A file in tests/data (see tests/data/MANIFEST.tsv for provenance)."""
    return DATA_DIR / name


def small_photo(name: str = "extreme_ironing.jpg", short_side: int = 96) -> np.ndarray:
    """A real photo, loaded through som.images and resized small so segmenters run fast."""
    from som.images import load_image, resize_short_side

    rgb, _ = resize_short_side(load_image(data_path(name)).rgb, short_side)
    return rgb
