"""coco: masks and category names from a COCO instances file, checked against pycocotools."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from som.segment import build_segmenter
from som.segment.coco import CocoIndex, CocoParams, CocoSegmenter

W1, H1 = 80, 60  # image 1
W2, H2 = 50, 40  # image 2

TRIANGLE = [[10.0, 5.0, 45.5, 12.25, 20.0, 40.0]]
TWO_PARTS = [  # one object in two pieces (an occluded dog)
    [50.0, 30.0, 70.0, 30.0, 70.0, 50.0, 50.0, 50.0],
    [60.5, 5.0, 75.0, 8.0, 72.0, 20.0, 58.0, 18.5, 56.0, 10.0],
]
IMAGE2_POLYGON = [[3.3, 4.7, 40.1, 2.2, 44.9, 30.6, 12.4, 36.8]]


def block_mask(height: int, width: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((height, width), np.uint8)
    mask[y0:y1, x0:x1] = 1
    return mask


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's list-of-counts RLE (column-major runs, starting with a run of zeros)."""
    flat = mask.flatten(order="F")
    changes = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], changes, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0]:
        counts = [0, *counts]
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def compressed_rle(mask: np.ndarray) -> dict:
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": rle["size"], "counts": rle["counts"].decode("ascii")}


CROWD = block_mask(H1, W1, 40, 58, 2, 30)  # crowd region, bottom left
CROWD[45:50, 10:15] = 0  # with a hole, so runs are not trivial
RLE_OBJECT = block_mask(H1, W1, 0, 9, 60, 80)  # touches the top and right borders
RLE_OBJECT[3:6, 70] = 0


def coco_document() -> dict:
    return {
        "info": {"description": "test"},
        "images": [
            {"id": 1, "file_name": "train2017/000000000001.jpg", "width": W1, "height": H1},
            {"id": 2, "file_name": "000000000002.jpg", "width": W2, "height": H2},
        ],
        "categories": [
            {"id": 1, "name": "person", "supercategory": "person"},
            {"id": 18, "name": "dog", "supercategory": "animal"},
        ],
        "annotations": [
            {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": TRIANGLE},
            {"id": 12, "image_id": 1, "category_id": 18, "iscrowd": 0, "segmentation": TWO_PARTS, "score": 0.75},
            {"id": 13, "image_id": 1, "category_id": 1, "iscrowd": 1, "segmentation": uncompressed_rle(CROWD)},
            {"id": 14, "image_id": 1, "category_id": 18, "iscrowd": 0, "segmentation": compressed_rle(RLE_OBJECT)},
            # Unusable annotations are skipped, not fatal: a 2-point "polygon", no segmentation.
            {"id": 15, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": [[1, 1, 2, 2]]},
            {"id": 16, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": []},
            {"id": 21, "image_id": 2, "category_id": 18, "iscrowd": 0, "segmentation": IMAGE2_POLYGON},
        ],
    }


@pytest.fixture
def coco_file(tmp_path):
    path = tmp_path / "instances_test.json"
    path.write_text(json.dumps(coco_document()))
    return path


@pytest.fixture
def segmenter(coco_file):
    return build_segmenter("coco", {"annotations": str(coco_file)})


def pycocotools_mask(segmentation, height: int, width: int) -> np.ndarray:
    """pycocotools' own rasterisation (as COCO.annToMask does)."""
    if isinstance(segmentation, list):
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation["counts"], list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return mask_utils.decode(rle).astype(bool)


def scaled_polygons(polygons, factor: float):
    return [[v * factor for v in polygon] for polygon in polygons]


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def blank(height: int, width: int) -> np.ndarray:
    return np.zeros((height, width, 3), np.uint8)


def test_masks_match_pycocotools_at_original_size(segmenter):
    """Polygons (one or several parts) and RLE (list or string counts) give exactly the mask
    pycocotools gives (COCO's annToMask), so ground truth matches COCO's own tools."""
    masks = segmenter.generate(blank(H1, W1), source="train2017/000000000001.jpg")
    document = coco_document()
    usable = document["annotations"][:4]
    assert len(masks) == len(usable)
    for mask, ann in zip(masks, usable, strict=True):
        expected = pycocotools_mask(ann["segmentation"], H1, W1)
        assert (mask.height, mask.width) == (H1, W1)
        assert iou(mask.full(), expected) > 0.9, ann["id"]  # the brief's bound, for diagnosis
        np.testing.assert_array_equal(mask.full(), expected, err_msg=str(ann["id"]))
    # Both parts of the two-piece object are in one mask.
    two_parts = masks[1].full()
    assert two_parts[40, 60] and two_parts[12, 65]


def test_categories_and_scores_are_carried(segmenter):
    """Each mask carries its category name, and a detection score when the file has one."""
    masks = segmenter.generate(blank(H1, W1), source="000000000001.jpg")
    assert [m.category for m in masks] == ["person", "dog", "person", "dog"]
    assert [m.score for m in masks] == [None, 0.75, None, None]


def test_masks_scale_with_the_marked_image(segmenter):
    """Marking a 2x-resized image rasterises the annotations at 2x (scaled to the image)."""
    masks = segmenter.generate(blank(2 * H1, 2 * W1), source="000000000001.jpg")
    usable = coco_document()["annotations"][:4]
    for mask, ann in zip(masks, usable, strict=True):
        assert (mask.height, mask.width) == (2 * H1, 2 * W1)
        segmentation = ann["segmentation"]
        if isinstance(segmentation, list):
            expected = pycocotools_mask(scaled_polygons(segmentation, 2), 2 * H1, 2 * W1)
            assert iou(mask.full(), expected) > 0.9, ann["id"]
            np.testing.assert_array_equal(mask.full(), expected, err_msg=str(ann["id"]))
        else:  # nearest-neighbour upscaling of the exact RLE mask
            original = pycocotools_mask(segmentation, H1, W1)
            np.testing.assert_array_equal(mask.full(), np.kron(original, np.ones((2, 2), bool)))


def test_masks_follow_non_uniform_resize(segmenter):
    """A short-side resize changes x and y by slightly different factors; masks follow both."""
    height, width = 45, 61  # 0.75 x 0.7625
    masks = segmenter.generate(blank(height, width), source="000000000001.jpg")
    triangle = pycocotools_mask(
        [[v * (width / W1 if i % 2 == 0 else height / H1) for i, v in enumerate(TRIANGLE[0])]],
        height,
        width,
    )
    assert iou(masks[0].full(), triangle) > 0.85
    crowd = masks[2].full()
    assert crowd.shape == (height, width)
    assert abs(crowd.sum() - CROWD.sum() * (height * width) / (H1 * W1)) < 0.1 * CROWD.sum()


def test_polygon_area_is_not_inflated(tmp_path):
    """A 20x20 square covers exactly 400 pixels (regression: cv2.fillPoly also filled the
    outline's pixels, giving 21x21 = 441 and inflating every polygon mask by ~half a pixel)."""
    square = [[50.0, 30.0, 70.0, 30.0, 70.0, 50.0, 50.0, 50.0]]
    document = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": W1, "height": H1}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "segmentation": square}],
        "categories": [{"id": 1, "name": "box"}],
    }
    path = tmp_path / "square.json"
    path.write_text(json.dumps(document))
    (mask,) = build_segmenter("coco", {"annotations": str(path)}).generate(blank(H1, W1), source="a.jpg")
    assert mask.area == 400
    assert (mask.x0, mask.y0) == (50, 30)
    assert mask.full()[30:50, 50:70].all()


def test_random_polygons_equal_pycocotools_even_across_the_border(tmp_path):
    """Many random polygons, some partly outside the image, at several output sizes: the masks
    equal pycocotools' rasterisation of the scaled polygons (to within one pixel: pycocotools'
    own float rounding depends slightly on where the crop starts)."""
    rng = np.random.default_rng(0)
    annotations = []
    for index in range(40):
        cx, cy = rng.uniform(-10, W1 + 10), rng.uniform(-10, H1 + 10)
        angles = np.sort(rng.uniform(0, 2 * np.pi, rng.integers(3, 12)))
        radii = rng.uniform(1, 30) * rng.uniform(0.4, 1.0, angles.size)
        polygon = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], 1)
        annotations.append(
            {"id": index, "image_id": 1, "category_id": 1, "segmentation": [polygon.round(2).ravel().tolist()]}
        )
    document = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": W1, "height": H1}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "blob"}],
    }
    path = tmp_path / "random.json"
    path.write_text(json.dumps(document))
    segmenter = build_segmenter("coco", {"annotations": str(path)})
    for height, width in [(H1, W1), (2 * H1, 2 * W1), (45, 61)]:
        masks = segmenter.generate(blank(height, width), source="a.jpg")
        expected_masks = []
        for ann in annotations:
            polygon = ann["segmentation"][0]
            scaled = [v * (width / W1 if i % 2 == 0 else height / H1) for i, v in enumerate(polygon)]
            expected = pycocotools_mask([scaled], height, width)
            if expected.any():
                expected_masks.append(expected)
        assert len(masks) == len(expected_masks)
        for mask, expected in zip(masks, expected_masks, strict=True):
            assert (mask.full() != expected).sum() <= 1


def test_second_image_has_its_own_annotations(segmenter):
    """Annotations are per image: image 2 gets only its own (fractional-coordinate) polygon."""
    masks = segmenter.generate(blank(H2, W2), source="000000000002.jpg")
    assert [m.category for m in masks] == ["dog"]
    assert iou(masks[0].full(), pycocotools_mask(IMAGE2_POLYGON, H2, W2)) > 0.9


def test_include_crowd_false_drops_crowd_regions(coco_file):
    """include_crowd=false leaves out iscrowd=1 regions (crowds are not single objects)."""
    segmenter = build_segmenter("coco", {"annotations": str(coco_file), "include_crowd": "false"})
    masks = segmenter.generate(blank(H1, W1), source="000000000001.jpg")
    assert [m.category for m in masks] == ["person", "dog", "dog"]
    assert not any(np.array_equal(m.full(), CROWD.astype(bool)) for m in masks)


def test_min_area(coco_file):
    """min_area drops masks with that many pixels or fewer."""
    every = build_segmenter("coco", {"annotations": str(coco_file)}).generate(blank(H1, W1), source="000000000001.jpg")
    threshold = sorted(m.area for m in every)[1]
    kept = build_segmenter("coco", {"annotations": str(coco_file), "min_area": str(threshold)}).generate(
        blank(H1, W1), source="000000000001.jpg"
    )
    assert len(kept) == len(every) - 2
    assert all(m.area > threshold for m in kept)


@pytest.mark.parametrize(
    "source",
    [
        "train2017/000000000001.jpg",
        "000000000001.jpg",
        "/data/coco/train2017/000000000001.jpg",
        "s3://bucket/any/prefix/000000000001.jpg",
        "C:\\coco\\images\\000000000001.jpg",
    ],
)
def test_lookup_by_file_name_or_basename(segmenter, source):
    """Images are found by their file_name or by basename, whatever folder or URI holds them."""
    assert len(segmenter.generate(blank(H1, W1), source=source)) == 4


def test_unlisted_image_raises_lookup_error(segmenter, coco_file):
    """An image the file does not list is a LookupError naming the image and the file."""
    with pytest.raises(LookupError) as info:
        segmenter.generate(blank(H1, W1), source="photos/000000000099.jpg")
    assert "000000000099.jpg" in str(info.value)
    assert str(coco_file) in str(info.value)


@pytest.mark.parametrize(
    "content",
    ['[{"id": 1}]', '{"annotations": [], "categories": []}', '{"images": ', "not json at all"],
)
def test_non_coco_json_is_a_value_error(tmp_path, content):
    """A JSON file that is not a COCO instances file (or not JSON) gives a ValueError."""
    path = tmp_path / "other.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="other.json"):
        CocoSegmenter(CocoParams(annotations=str(path)))


def test_missing_annotations_file_is_a_value_error(tmp_path):
    """A wrong --masks path is reported as a ValueError naming it."""
    with pytest.raises(ValueError, match="missing.json"):
        build_segmenter("coco", {"annotations": str(tmp_path / "missing.json")})


def test_index_can_be_shared_and_describe_is_portable(coco_file):
    """One loaded index serves many segmenters; describe() records the file's name only."""
    index = CocoIndex.load(coco_file)
    segmenter = CocoSegmenter(CocoParams(annotations=str(coco_file), include_crowd=False), index)
    assert segmenter.describe() == {
        "name": "coco",
        "params": {"annotations": "instances_test.json", "include_crowd": False, "min_area": 0},
    }
    assert index.lookup("x/000000000002.jpg")["id"] == 2
    assert index.lookup("000000000003.jpg") is None


# --- issue 11 item 6: a size mismatch or a malformed record is a per-image error ---------------

from som.segment.coco import CocoImageError  # noqa: E402


def _one_image_file(tmp_path, record: dict, segmentation) -> str:
    document = {
        "images": [{"id": 1, "file_name": "a.jpg", **record}],
        "categories": [{"id": 1, "name": "cat"}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "iscrowd": 0, "segmentation": segmentation}],
    }
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(document))
    return str(path)


def test_half_size_image_is_an_error_naming_both_sizes(segmenter):
    """An image file at half the annotated size, not resized by marking, is rejected (it was
    stretched silently) when the pre-resize size is known."""
    with pytest.raises(CocoImageError, match=r"masks are 80x60 but the image is 40x30"):
        segmenter.generate(blank(H1 // 2, W1 // 2), source="000000000001.jpg", original_size=(H1 // 2, W1 // 2))


def test_stretched_image_is_an_error(segmenter):
    """A different aspect ratio cannot come from marking's uniform resize: an error, not a stretch."""
    with pytest.raises(CocoImageError, match=r"masks are 80x60 but the image is 80x30") as info:
        segmenter.generate(blank(30, 80), source="000000000001.jpg")
    assert isinstance(info.value, LookupError)  # so som mark / the dataset quarantine it


def test_exif_rotated_image_error_says_so(segmenter):
    """An upright (EXIF-transposed) photo has width and height swapped relative to COCO's record."""
    with pytest.raises(CocoImageError, match=r"masks are 80x60 but the image is 60x80.*EXIF"):
        segmenter.generate(blank(W1, H1), source="000000000001.jpg")


def test_rescale_param_stretches_on_request(coco_file):
    segmenter = build_segmenter("coco", {"annotations": str(coco_file), "rescale": "true"})
    masks = segmenter.generate(blank(30, 80), source="000000000001.jpg")
    assert masks and all((m.height, m.width) == (30, 80) for m in masks)


def test_wrong_size_rle_is_an_error(tmp_path):
    rle = compressed_rle(block_mask(30, 40, 0, 10, 0, 10))  # 40x30, record says 80x60
    path = _one_image_file(tmp_path, {"width": W1, "height": H1}, rle)
    segmenter = build_segmenter("coco", {"annotations": path})
    with pytest.raises(CocoImageError, match=r"masks are 40x30 but the image is 80x60"):
        segmenter.generate(blank(H1, W1), source="a.jpg")


@pytest.mark.parametrize(
    ("record", "segmentation", "reason"),
    [
        ({"width": W1, "height": H1}, [[10, 10, "a", 20, 30, 30]], r"non-numeric polygon coordinate 'a'"),
        ({"height": H1}, TRIANGLE, r"a.jpg has no 'width'"),
        ({"width": 0, "height": H1}, TRIANGLE, r"a.jpg has width 0; it must be a positive integer"),
    ],
)
def test_malformed_records_have_readable_reasons(tmp_path, record, segmentation, reason):
    """Today: ValueError ... 'a', KeyError 'width', ZeroDivisionError."""
    path = _one_image_file(tmp_path, record, segmentation)
    segmenter = build_segmenter("coco", {"annotations": path})
    with pytest.raises(CocoImageError, match=reason):
        segmenter.generate(blank(H1, W1), source="a.jpg")


def test_mismatch_is_quarantined_by_som_mark(tmp_path, coco_file):
    """The per-image error reaches quarantine.jsonl with its reason; the run goes on."""
    from PIL import Image

    from som.mark.batch import mark_paths
    from som.mark.options import MarkOptions

    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (W1, H1 // 2)).save(images / "000000000001.jpg")  # wrong aspect
    Image.new("RGB", (W2, H2)).save(images / "000000000002.jpg")  # right size
    segmenter = build_segmenter("coco", {"annotations": str(coco_file)})
    summary = mark_paths([images], tmp_path / "out", segmenter, MarkOptions(short_side=0), progress=False)
    failed = [json.loads(line) for line in (tmp_path / "out" / "quarantine.jsonl").read_text().splitlines()]
    assert len(failed) == 1 and failed[0]["source"].endswith("000000000001.jpg")
    assert "masks are 80x60 but the image is 80x30" in failed[0]["reason"]
    assert sum(r.status == "marked" for r in summary.reports) == 1


def test_mismatch_is_a_failed_manifest_row_in_the_dataset(tmp_path, coco_file):
    """The dataset's --coco source: the image's row is `failed` with the reason; no crash."""
    from PIL import Image

    from som.dataset.shard import MarkConfig, mark_source
    from som.dataset.sources import SourceImage
    from som.mark.options import MarkOptions

    path = tmp_path / "000000000001.jpg"
    Image.new("RGB", (H1, W1)).save(path)  # upright 60x80: width and height swapped
    params = {"annotations": str(coco_file)}
    config = MarkConfig(segmenter="coco", segmenter_params=params, options=MarkOptions(short_side=0))
    item = SourceImage(str(path), path.stat().st_size, "test")
    row = mark_source(item, str(tmp_path / "dest"), config, build_segmenter("coco", params))
    assert row.status == "failed"
    assert "masks are 80x60 but the image is 60x80" in row.error and "EXIF" in row.error
