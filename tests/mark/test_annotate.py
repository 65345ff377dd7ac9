"""The per-image unit shared by `som mark` and the dataset flow."""

import io
import json

from PIL import Image

from som.images import decode_image
from som.mark import MarkOptions, annotate
from som.segment import build_segmenter
from som.segment.coco import CocoIndex, CocoParams, CocoSegmenter
from tests.helpers.data import data_path


def coco_for(name, width, height):
    return CocoIndex(
        {
            "images": [{"id": 7, "file_name": name, "width": width, "height": height}],
            "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "iron"}],
            "annotations": [
                {
                    "id": 1,
                    "image_id": 7,
                    "category_id": 1,
                    "iscrowd": 0,
                    "segmentation": [[200, 50, 420, 50, 420, 330, 200, 330]],
                },
                {
                    "id": 2,
                    "image_id": 7,
                    "category_id": 2,
                    "iscrowd": 0,
                    "segmentation": [[300, 150, 360, 150, 360, 200, 300, 200]],
                },
            ],
        }
    )


def test_metadata_follows_the_design_json_and_coordinates_are_resized():
    loaded = decode_image(data_path("extreme_ironing.jpg").read_bytes(), "photos/extreme_ironing.jpg")
    segmenter = CocoSegmenter(CocoParams(), coco_for("extreme_ironing.jpg", 570, 380))
    output = annotate(loaded, segmenter, MarkOptions())
    meta = json.loads(output.metadata_json())
    assert (meta["width"], meta["height"], meta["original_width"], meta["original_height"]) == (960, 640, 570, 380)
    assert abs(meta["scale"] - 640 / 380) < 1e-6
    assert meta["sha256"] == loaded.sha256 and meta["image"] == "photos/extreme_ironing.jpg"
    assert meta["segmenter"]["name"] == "coco" and meta["style"]["modes"] == ["mark"]
    iron, person = meta["marks"]
    assert (iron["category"], person["category"]) == ("iron", "person")
    # The iron's 60x50 box at scale 1.684 is about 101x84 in the marked image.
    x, y, w, h = iron["bbox"]
    assert abs(x - 300 * meta["scale"]) <= 1 and abs(w - 60 * meta["scale"]) <= 2 and abs(h - 50 * meta["scale"]) <= 2
    assert iron["segmentation"]["size"] == [640, 960]
    image = Image.open(io.BytesIO(output.image_bytes))
    assert image.format == "JPEG" and image.size == (960, 640)


def test_png_output_and_original_size():
    loaded = decode_image(data_path("extreme_ironing.jpg").read_bytes(), "extreme_ironing.jpg")
    segmenter = CocoSegmenter(CocoParams(), coco_for("extreme_ironing.jpg", 570, 380))
    output = annotate(loaded, segmenter, MarkOptions(short_side=0), image_format="png")
    image = Image.open(io.BytesIO(output.image_bytes))
    assert image.format == "PNG" and image.size == (570, 380)
    assert output.metadata["scale"] == 1.0


def test_image_without_masks_is_skipped_not_crashed():
    loaded = decode_image(data_path("extreme_ironing.jpg").read_bytes(), "extreme_ironing.jpg")
    index = CocoIndex(
        {"images": [{"id": 1, "file_name": "extreme_ironing.jpg", "width": 570, "height": 380}], "annotations": []}
    )
    output = annotate(loaded, CocoSegmenter(CocoParams(), index), MarkOptions())
    assert output.image_bytes is None
    assert output.metadata["marks"] == [] and output.skipped == "the segmenter returned no masks"


def test_slic_on_a_real_photo_tags_most_of_the_image():
    loaded = decode_image(data_path("extreme_ironing.jpg").read_bytes(), "extreme_ironing.jpg")
    output = annotate(loaded, build_segmenter("slic", {"n_segments": "30"}), MarkOptions(short_side=320))
    marks = output.metadata["marks"]
    assert 10 <= len(marks) <= 60
    assert [m["id"] for m in marks] == list(range(1, len(marks) + 1))
    assert sum(m["area"] for m in marks) > 0.9 * 320 * 480, "superpixels cover the image"


# --- issue 11 item 6: the COCO size check uses the size before the marking resize -------------

import pytest  # noqa: E402

from som.segment.coco import CocoImageError  # noqa: E402


def _photo_at(width: int, height: int, name: str = "photos/extreme_ironing.jpg"):
    """The photo re-encoded at width x height, decoded as marking would load it."""
    buffer = io.BytesIO()
    Image.open(data_path("extreme_ironing.jpg")).convert("RGB").resize((width, height)).save(buffer, format="JPEG")
    return decode_image(buffer.getvalue(), name)


def test_coco_image_resized_for_marking_passes_when_its_original_size_is_the_records():
    """570x380 annotated, marked at short side 190 (285x190): the original size matches."""
    segmenter = CocoSegmenter(CocoParams(), coco_for("extreme_ironing.jpg", 570, 380))
    output = annotate(_photo_at(570, 380), segmenter, MarkOptions(short_side=190))
    assert (output.metadata["width"], output.metadata["height"]) == (285, 190)
    assert len(output.metadata["marks"]) == 2


def test_coco_half_size_copy_is_an_error_even_when_the_resize_restores_the_records_size():
    """A 285x190 copy of a photo annotated at 570x380, marked at short side 380: resized, it is
    570x380 again, which the check used to compare and pass; masks then landed on a copy that
    was never annotated. Both sizes are named."""
    segmenter = CocoSegmenter(CocoParams(), coco_for("extreme_ironing.jpg", 570, 380))
    with pytest.raises(CocoImageError, match=r"masks are 570x380 but the image is 285x190"):
        annotate(_photo_at(285, 190), segmenter, MarkOptions(short_side=380))


def test_coco_half_size_copy_is_stretched_when_rescale_is_asked_for():
    segmenter = CocoSegmenter(CocoParams(rescale=True), coco_for("extreme_ironing.jpg", 570, 380))
    output = annotate(_photo_at(285, 190), segmenter, MarkOptions(short_side=380))
    assert (output.metadata["width"], output.metadata["height"]) == (570, 380)
    assert len(output.metadata["marks"]) == 2
