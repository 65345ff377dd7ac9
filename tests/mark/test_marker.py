"""Marking one image: the 110 px rule, numbering, metadata geometry, drawing modes."""

import numpy as np
import pytest

from som.mark import MarkOptions, mark_image, rle
from som.segment.mask import Mask
from tests.helpers.masks import random_masks, reference_position, reference_residuals


def rect(height, width, y0, y1, x0, x1, **kwargs) -> Mask:
    full = np.zeros((height, width), bool)
    full[y0:y1, x0:x1] = True
    return Mask.from_full(full, **kwargs)


def grey(height=120, width=160):
    return np.full((height, width, 3), 128, np.uint8)


def test_small_residuals_are_untagged_but_keep_their_pixels():
    big = rect(120, 160, 0, 120, 0, 160)
    tiny = rect(120, 160, 10, 19, 10, 22)  # 9 x 12 = 108 px < 110: untagged
    enough = rect(120, 160, 50, 61, 50, 60)  # 11 x 10 = 110 px: tagged
    result = mark_image(grey(), [big, tiny, enough], MarkOptions())
    assert [m["area"] for m in result.marks] == [110, 120 * 160 - 108 - 110]
    background = rle.decode(result.marks[1]["segmentation"])
    assert not background[10:19, 10:22].any(), "the untagged mask keeps its pixels"
    assert not background[50:61, 50:60].any()


def test_tags_number_smallest_first_with_geometry_inside_the_residual():
    masks = [
        rect(120, 160, 0, 120, 0, 160, score=0.5, category="table"),
        rect(120, 160, 20, 60, 30, 90, score=0.9, category="cup"),
    ]
    result = mark_image(grey(), masks, MarkOptions(label_mode="alpha"))
    first, second = result.marks
    assert (first["id"], first["label"], first["category"], first["score"]) == (1, "a", "cup", 0.9)
    assert (second["id"], second["label"], second["category"]) == (2, "b", "table")
    assert first["bbox"] == [30, 20, 60, 40]
    # Distance 20 is reached on rows 39-40, columns 49-70: 44 ties, the 23rd is (row 40, col 49).
    assert first["position"] == [49, 40]
    for mark in result.marks:
        mask = rle.decode(mark["segmentation"])
        x, y = mark["position"]
        assert mask[y, x]
        bx, by, bw, bh = mark["bbox"]
        ys, xs = np.nonzero(mask)
        assert (xs.min(), ys.min(), xs.max() + 1 - bx, ys.max() + 1 - by) == (bx, by, bw, bh)
        assert mask.sum() == mark["area"]


@pytest.mark.parametrize("seed", range(25))
def test_metadata_matches_the_reference_annotator(seed):
    masks = random_masks(seed, 60, 80, 10)
    result = mark_image(grey(60, 80), masks, MarkOptions(min_tag_area=20))
    expected = [r for r in reference_residuals(masks) if r.sum() >= 20]
    assert len(result.marks) == len(expected)
    for mark, residual in zip(result.marks, expected, strict=False):
        assert np.array_equal(rle.decode(mark["segmentation"]), residual)
        row, col = reference_position(residual)
        assert mark["position"] == [col, row]


def test_nothing_to_tag_is_skipped_with_a_reason():
    assert mark_image(grey(), [], MarkOptions()).skipped == "the segmenter returned no masks"
    tiny = mark_image(grey(), [rect(120, 160, 0, 5, 0, 5)], MarkOptions())
    assert tiny.marks == [] and "110 px" in tiny.skipped


def test_mask_size_mismatch_is_an_error():
    with pytest.raises(ValueError, match="does not match"):
        mark_image(grey(), [rect(60, 80, 0, 10, 0, 10)], MarkOptions())


def test_mark_mode_draws_a_dark_box_with_light_text_at_the_position():
    image = grey(480, 640)
    result = mark_image(image, [rect(480, 640, 100, 400, 100, 500)], MarkOptions())
    x, y = result.marks[0]["position"]
    patch = result.image[y - 8 : y + 8, x - 6 : x + 6].astype(int)
    assert patch.min() < 60 and patch.max() > 200, "black box (0.8 alpha) with white text"
    assert np.array_equal(result.image[:10], image[:10]), "pixels away from tags are untouched"
    assert not np.shares_memory(result.image, image)


def test_mask_box_and_contour_modes():
    masks = [rect(120, 160, 20, 100, 20, 140)]
    filled = mark_image(grey(), masks, MarkOptions(modes=("mask",))).image
    assert not np.array_equal(filled[60, 30], [128, 128, 128]), "inside is tinted"
    assert np.array_equal(filled[5, 5], [128, 128, 128]), "outside is not"
    boxed = mark_image(grey(), masks, MarkOptions(modes=("box",))).image
    assert not np.array_equal(boxed[20, 80], [128, 128, 128]) and np.array_equal(boxed[60, 80], [128, 128, 128])
    outlined = mark_image(grey(), masks, MarkOptions(modes=("contour",))).image
    assert not np.array_equal(outlined[20, 80], [128, 128, 128])


def test_drawing_is_deterministic_and_label_colour_contrasts_with_fills():
    masks = random_masks(3, 120, 160, 8)
    options = MarkOptions(modes=("mark", "mask"), min_tag_area=10)
    first = mark_image(grey(), masks, options).image
    assert np.array_equal(first, mark_image(grey(), masks, options).image)
    assert not np.array_equal(
        first, mark_image(grey(), masks, MarkOptions(modes=("mark", "mask"), min_tag_area=10, seed=1)).image
    )


def test_invalid_options_are_rejected():
    with pytest.raises(ValueError, match=r"modes\.1\s+Input should be 'mark', 'mask', 'box' or 'contour'"):
        MarkOptions(modes=("mark", "glow"))
    with pytest.raises(ValueError, match=r"modes\s+Tuple should have at least 1 item"):
        MarkOptions(modes=())
    with pytest.raises(ValueError, match=r"label_mode\s+Input should be 'number' or 'alpha'"):
        MarkOptions(label_mode="roman")
