"""Tag names from COCO ground truth (mask IoU) or from the segmenter's own categories.

Scenes: a real photo marked by the real annotator with "proposal" masks that carry no
category (a segmenter such as SAM), and a COCO ground-truth file whose instances overlap
those proposals by known amounts.
"""

from __future__ import annotations

import numpy as np
import pytest

from som.data.naming import (
    SOURCE_COCO_GT,
    SOURCE_SEGMENTER,
    NamingConfig,
    match_by_iou,
    name_tags,
)
from som.images import decode_image
from som.mark import MarkOptions, annotate, rle
from som.segment.coco import CocoIndex, CocoParams, CocoSegmenter
from tests.helpers.data import data_path

PHOTO = "extreme_ironing.jpg"  # 570 x 380
W, H = 570, 380


def rect(x0, y0, x1, y1):
    return [[x0, y0, x1, y0, x1, y1, x0, y1]]


# Proposals: what a class-agnostic segmenter found (category ids that name nothing).
PROPOSALS = {
    "person": rect(200, 50, 420, 330),
    "iron": rect(300, 150, 360, 200),  # inside the person: the person's residual loses it
    "stray": rect(20, 20, 80, 80),  # no ground truth here
    "car": rect(440, 200, 540, 300),
}
# Ground truth: the same objects, drawn a little differently.
GT = [
    ("person", rect(205, 55, 415, 325), 0),
    ("iron", rect(302, 150, 360, 202), 0),
    ("car", rect(465, 200, 565, 300), 0),  # shifted 25 px: IoU 75/125 = 0.6 with its proposal
    ("dog", rect(20, 300, 100, 370), 0),  # nothing proposed here
]
CATEGORIES = ["person", "iron", "car", "dog", "crowd", "stray"]


def coco(objects, *, named=True, file_name=PHOTO):
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(CATEGORIES)] if named else []
    annotations = [
        {
            "id": 100 + k,
            "image_id": 7,
            "category_id": CATEGORIES.index(name) + 1,
            "iscrowd": crowd,
            "segmentation": polygon,
        }
        for k, (name, polygon, crowd) in enumerate(objects)
    ]
    return CocoIndex(
        {
            "images": [{"id": 7, "file_name": file_name, "width": W, "height": H}],
            "categories": categories,
            "annotations": annotations,
        }
    )


def marked(index, short_side=640):
    loaded = decode_image(data_path(PHOTO).read_bytes(), f"photos/{PHOTO}")
    return annotate(loaded, CocoSegmenter(CocoParams(), index), MarkOptions(short_side=short_side)).metadata


@pytest.fixture(scope="module")
def proposals_marks():
    """Marked at 960x640 (scale 1.68) with category-less proposals."""
    marks = marked(coco([(n, p, 0) for n, p in PROPOSALS.items()], named=False))
    assert all(m["category"] is None for m in marks["marks"])
    return marks


def tag_at(marks, x, y):
    """The tag whose residual covers original-image point (x, y)."""
    scale = marks["scale"]
    for mark in marks["marks"]:
        if rle.decode(mark["segmentation"])[int(y * scale), int(x * scale)]:
            return mark["id"]
    raise AssertionError(f"no tag at {x}, {y}")


def test_tags_take_the_category_of_the_instance_they_overlap(proposals_marks):
    names = name_tags(proposals_marks, coco(GT)).by_id()
    marks = proposals_marks
    person, iron = tag_at(marks, 250, 100), tag_at(marks, 330, 175)
    car, stray = tag_at(marks, 500, 250), tag_at(marks, 50, 50)
    assert (names[person].name, names[iron].name, names[car].name) == ("person", "iron", "car")
    assert {names[t].source for t in (person, iron, car)} == {SOURCE_COCO_GT}
    assert not names[stray].labeled and names[stray].source is None  # unmatched: unlabeled
    assert names[car].annotation_id == 102 and names[iron].annotation_id == 101
    assert 0.55 < names[car].iou < 0.65  # 0.6 in the original, up to resampling at 1.68x


def test_reported_iou_equals_the_decoded_masks_iou(proposals_marks):
    index = coco(GT)
    names = name_tags(proposals_marks, index)
    size = proposals_marks["height"], proposals_marks["width"]
    gt_masks = {m.category: m.full() for m in index.masks_for(index.lookup(PHOTO), *size)}
    checked = 0
    for mark in proposals_marks["marks"]:
        tag = names.by_id()[mark["id"]]
        if not tag.labeled:
            continue
        residual = rle.decode(mark["segmentation"])
        gt = gt_masks[tag.name]
        iou = (residual & gt).sum() / (residual | gt).sum()
        assert tag.iou == pytest.approx(iou, abs=1e-4)
        checked += 1
    assert checked == 3


def test_threshold_decides_which_matches_count(proposals_marks):
    index = coco(GT)
    car = tag_at(proposals_marks, 500, 250)
    loose = name_tags(proposals_marks, index, NamingConfig(iou_threshold=0.5)).by_id()
    strict = name_tags(proposals_marks, index, NamingConfig(iou_threshold=0.7)).by_id()
    assert loose[car].name == "car"
    assert strict[car].name is None  # IoU 0.6 < 0.7: unlabeled
    assert strict[tag_at(proposals_marks, 250, 100)].name == "person"  # IoU ~0.87 survives
    assert name_tags(proposals_marks, index).source_counts() == {SOURCE_COCO_GT: 3, "unlabeled": 1}


def test_crowd_regions_only_when_asked(proposals_marks):
    objects = [("crowd", rect(18, 18, 82, 82), 1)]
    stray = tag_at(proposals_marks, 50, 50)
    assert name_tags(proposals_marks, coco(objects)).by_id()[stray].name is None
    with_crowd = name_tags(proposals_marks, coco(objects), NamingConfig(include_crowd=True)).by_id()
    assert with_crowd[stray].name == "crowd"


def test_no_index_leaves_category_less_tags_unlabeled(proposals_marks):
    names = name_tags(proposals_marks)
    assert [t.name for t in names.tags] == [None] * len(proposals_marks["marks"])
    assert [t.tag for t in names.tags] == [m["id"] for m in proposals_marks["marks"]]


def test_segmenter_categories_are_used_directly():
    # The coco segmenter itself: every tag carries its category; no matching is done, so an
    # index that does not even list the image is never consulted.
    marks = marked(coco(GT), short_side=0)
    names = name_tags(marks, coco([], file_name="another.jpg"))
    assert sorted(t.name for t in names.tags) == ["car", "dog", "iron", "person"]
    assert {t.source for t in names.tags} == {SOURCE_SEGMENTER}
    assert [t.label for t in names.tags] == [m["label"] for m in marks["marks"]]


def test_image_missing_from_ground_truth_is_a_clear_error(proposals_marks):
    with pytest.raises(LookupError, match="extreme_ironing.jpg"):
        name_tags(proposals_marks, coco(GT, file_name="another.jpg"))


def test_mismatched_rle_size_is_refused(proposals_marks):
    marks = dict(proposals_marks, width=proposals_marks["width"] + 1)
    with pytest.raises(ValueError, match="RLE size"):
        name_tags(marks, coco(GT))


def test_assignment_is_one_to_one_and_beats_greedy():
    # Greedy would give instance 0 to tag 0 (0.6) and leave tag 1 unnamed; the assignment
    # pairs (0, 1) and (1, 0) for a total of 1.05.
    iou = np.array([[0.6, 0.5], [0.55, 0.0]])
    assert match_by_iou(iou, 0.3) == [(0, 1), (1, 0)]
    assert match_by_iou(iou, 0.58) == [(0, 0)]  # weak pairs never displace a strong one
    assert match_by_iou(np.array([[0.4]]), 0.5) == []
    assert match_by_iou(np.zeros((0, 3)), 0.5) == []


def test_config_validation():
    with pytest.raises(ValueError):
        NamingConfig(iou_threshold=0)
