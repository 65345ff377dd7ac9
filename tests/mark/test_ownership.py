"""Exclusive ownership: the smallest mask containing a pixel owns it, nothing is lost."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from som.mark.ownership import assign_ownership
from som.segment.mask import Mask
from tests.helpers.masks import random_masks, reference_residuals

scenes = st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 40), st.integers(1, 40), st.integers(1, 12))


def owned(scene):
    """A scene's random masks and their ownership; None when the scene has no mask."""
    seed, height, width, count = scene
    masks = random_masks(seed, height, width, count)
    return (masks, assign_ownership(masks, height, width)) if masks else None


@settings(max_examples=200, deadline=None)
@given(scenes)
def test_ownership_matches_the_reference_residuals(scene):
    if (found := owned(scene)) is None:
        return
    masks, ownership = found
    expected = reference_residuals(masks)
    for rank, residual in enumerate(expected):
        assert np.array_equal(ownership.owner == rank + 1, residual)
        assert ownership.residual_area[rank] == residual.sum()


@settings(max_examples=200, deadline=None)
@given(scenes)
def test_union_preserved_and_smallest_containing_mask_wins(scene):
    if (found := owned(scene)) is None:
        return
    masks, ownership = found
    union = np.logical_or.reduce([m.full() for m in masks])
    assert np.array_equal(ownership.owner > 0, union)
    areas = np.array([m.area for m in masks])
    for y, x in zip(*np.nonzero(union), strict=False):
        containing = [i for i, m in enumerate(masks) if m.full()[y, x]]
        owner_index = ownership.order[ownership.owner[y, x] - 1]
        assert areas[owner_index] == min(areas[containing])
        assert owner_index == min(i for i in containing if areas[i] == areas[owner_index])


def test_ranks_are_area_ascending_and_stable():
    big = Mask.from_full(np.ones((10, 10), bool))
    small = np.zeros((10, 10), bool)
    small[2:4, 2:4] = True
    twin_a, twin_b = Mask.from_full(small), Mask.from_full(small)
    ownership = assign_ownership([big, twin_a, twin_b], 10, 10)
    assert ownership.order.tolist() == [1, 2, 0]
    assert ownership.residual_area.tolist() == [4, 0, 96]
