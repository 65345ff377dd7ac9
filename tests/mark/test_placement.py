"""Tag placement: innermost point by exact EDT, middle of the ties, image border is outside."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from som.mark.placement import innermost_point, tight_box

from tests.helpers.masks import reference_position


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 30), st.integers(1, 30))
def test_position_equals_the_reference_on_the_full_image(seed, height, width):
    rng = np.random.default_rng(seed)
    full = np.zeros((height + 6, width + 6), bool)
    full[3 : 3 + height, 3 : 3 + width] = rng.random((height, width)) < rng.uniform(0.3, 1.0)
    if not full.any():
        return
    r0, c0, r1, c1 = tight_box(full)
    row, col = innermost_point(full[r0:r1, c0:c1])
    assert (r0 + row, c0 + col) == reference_position(full)
    assert full[r0 + row, c0 + col], "the tag sits inside its mask"


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_position_is_at_the_maximum_distance(seed):
    rng = np.random.default_rng(seed)
    crop = rng.random((25, 25)) < 0.8
    if not crop.any():
        return
    row, col = innermost_point(crop)
    distance = ndimage.distance_transform_edt(np.pad(crop, 1))[1:-1, 1:-1]
    assert distance[row, col] == distance.max()


def test_rectangle_centre_and_tie_breaking():
    # 5 rows x 9 columns: the middle row's cells 2..6 are all at distance 3; middle is col 4.
    assert innermost_point(np.ones((5, 9), bool)) == (2, 4)
    # 4x4: the four centre cells tie at distance 2; row-major middle (index 2) is (2, 1).
    assert innermost_point(np.ones((4, 4), bool)) == (2, 1)


def test_border_counts_as_outside_and_holes_repel():
    ring = np.ones((21, 21), bool)
    ring[5:16, 5:16] = False  # a hole in the middle: the tag goes into the thick frame
    row, col = innermost_point(ring)
    assert ring[row, col]
    assert not (5 <= row < 16 and 5 <= col < 16)
