"""slic and felzenszwalb: the offline segmenters partition a real photo into cropped masks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from som.segment import Mask, build_segmenter
from som.segment.superpixel import masks_from_labels
from tests.helpers.data import small_photo


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return small_photo("waterview.jpg", short_side=120)  # 120 x 179


def reference_labels(name: str, photo: np.ndarray, params: dict) -> np.ndarray:
    """scikit-image's own label image for the same parameters (labels start at 1)."""
    from skimage.segmentation import felzenszwalb, slic

    if name == "slic":
        return slic(photo, start_label=1, enforce_connectivity=True, **params)
    return felzenszwalb(photo, **params) + 1


CASES = [
    ("slic", {"n_segments": 24, "compactness": 10.0, "sigma": 1.0}),
    ("felzenszwalb", {"scale": 200.0, "sigma": 0.8, "min_size": 50}),
]


@pytest.mark.parametrize(("name", "params"), CASES, ids=[c[0] for c in CASES])
def test_masks_partition_the_image(photo, name, params):
    """Every pixel belongs to exactly one mask, and each mask is one scikit-image segment."""
    masks = build_segmenter(name, params).generate(photo)
    height, width = photo.shape[:2]
    assert len(masks) > 5
    coverage = np.zeros((height, width), np.int32)
    for mask in masks:
        assert isinstance(mask, Mask)
        assert (mask.height, mask.width) == (height, width)
        assert mask.crop.dtype == bool
        assert mask.score is None and mask.category is None
        coverage += mask.full()
    assert (coverage == 1).all()

    labels = reference_labels(name, photo, params)
    expected = {tuple(np.flatnonzero(labels == v)) for v in np.unique(labels)}
    assert {tuple(np.flatnonzero(m.full())) for m in masks} == expected


@pytest.mark.parametrize(("name", "params"), CASES, ids=[c[0] for c in CASES])
def test_crops_are_tight_and_offsets_right(photo, name, params):
    """Each crop is its mask's bounding box: full() round-trips through Mask.from_full."""
    for mask in build_segmenter(name, params).generate(photo):
        full = mask.full()
        again = Mask.from_full(full)
        assert (again.x0, again.y0) == (mask.x0, mask.y0)
        np.testing.assert_array_equal(again.crop, mask.crop)
        assert mask.area == int(full.sum()) > 0
        # Tight: the crop's border rows and columns all touch the mask.
        crop = mask.crop
        assert crop[0].any() and crop[-1].any() and crop[:, 0].any() and crop[:, -1].any()


@pytest.mark.parametrize("name", ["slic", "felzenszwalb"])
def test_min_area_drops_small_segments(photo, name):
    """min_area keeps only masks larger than it."""
    params = dict(CASES[0][1] if name == "slic" else CASES[1][1])
    every = build_segmenter(name, params).generate(photo)
    threshold = int(np.median([m.area for m in every]))
    kept = build_segmenter(name, {**params, "min_area": threshold}).generate(photo)
    assert all(m.area > threshold for m in kept)
    assert len(kept) == sum(m.area > threshold for m in every)
    assert 0 < len(kept) < len(every)


def test_slic_segment_count_follows_n_segments(photo):
    """n_segments steers how finely SLIC cuts the image."""
    coarse = build_segmenter("slic", {"n_segments": "8"}).generate(photo)
    fine = build_segmenter("slic", {"n_segments": "64"}).generate(photo)
    assert len(coarse) < len(fine)


@pytest.mark.parametrize(("name", "params"), CASES, ids=[c[0] for c in CASES])
def test_describe_has_name_and_all_params(name, params):
    """describe() is the JSON recorded in every output: name plus every parameter."""
    description = build_segmenter(name, params).describe()
    assert description["name"] == name
    assert set(params) | {"min_area"} <= set(description["params"])
    for key, value in params.items():
        assert description["params"][key] == value
    assert json.loads(json.dumps(description)) == description


def test_masks_from_labels_skips_missing_labels():
    """Label images with gaps (unused label values) give one mask per present label."""
    labels = np.zeros((6, 8), np.int32)
    labels[0:2, 0:3] = 1
    labels[3:6, 5:8] = 4  # labels 2 and 3 unused; 0 is background
    masks = masks_from_labels(labels)
    assert [(m.x0, m.y0, m.crop.shape, m.area) for m in masks] == [
        (0, 0, (2, 3), 6),
        (5, 3, (3, 3), 9),
    ]
