"""RLE from crops equals pycocotools' encoding of the full mask."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from pycocotools import mask as mask_utils

from som.mark import rle


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 20), st.integers(1, 20))
def test_crop_rle_equals_pycocotools_and_round_trips(seed, height, width):
    rng = np.random.default_rng(seed)
    y0, x0 = rng.integers(0, height), rng.integers(0, width)
    h, w = rng.integers(1, height - y0 + 1), rng.integers(1, width - x0 + 1)
    full = np.zeros((height, width), bool)
    full[y0 : y0 + h, x0 : x0 + w] = rng.random((h, w)) < rng.uniform(0, 1)
    encoded = rle.encode_counts(rle.crop_runs(full[y0 : y0 + h, x0 : x0 + w], x0, y0, height, width), height, width)
    expected = mask_utils.encode(np.asfortranarray(full.astype(np.uint8)))
    assert encoded["counts"] == expected["counts"].decode("ascii")
    assert encoded["size"] == [height, width]
    assert np.array_equal(rle.decode(encoded), full)


def test_runs_touching_column_ends_merge():
    full = np.zeros((3, 3), bool)
    full[2, 0] = full[0, 1] = True  # adjacent in column-major order
    runs = rle.crop_runs(full[0:3, 0:2], 0, 0, 3, 3)
    assert runs.tolist() == [2, 2, 5]
