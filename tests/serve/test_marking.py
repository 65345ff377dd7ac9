"""On-the-fly marking for serving (som.serve.marking): what the served model sees matches the
marks the chat and demo show, and bad uploads are refused with a reason.

Real SLIC segmentation of the real test photos; no mocks.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from som.eval.tagging import TagConfig
from som.images import ImageLoadError
from som.mark.draw import tag_colour
from som.mark.placement import tight_box
from som.serve.marking import MarkedImage, mark_image, mentioned_tags
from tests.helpers.data import data_path
from tests.helpers.image_sets import pixel_bomb


def png_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def corrupt_png() -> bytes:
    """A PNG whose compressed pixel data is overwritten with garbage (a damaged upload)."""
    data = bytearray(png_bytes(np.full((64, 64, 3), 90, dtype=np.uint8)))
    start = data.index(b"IDAT") + 8
    data[start : start + 20] = b"\xff" * 20
    return bytes(data)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    """waterview.jpg at 240 px high, as exact pixels (PNG input and short_side=0: no resampling)."""
    picture = Image.open(data_path("waterview.jpg")).convert("RGB")
    return np.asarray(picture.resize((360, 240)))


def slic(**mark_options) -> TagConfig:
    return TagConfig(segmenter="slic", params={"n_segments": "16"}, mark_options={"short_side": 0, **mark_options})


def test_marks_agree_with_the_drawn_masks(photo):
    """Each mark's RLE is the region filled with its tag's colour in the returned PNG, and its
    bbox and area are that mask's; masks are disjoint and everything else is untouched."""
    alpha = 0.5
    marked = mark_image(png_bytes(photo), slic(modes=["mask"], mask_alpha=alpha))
    drawn = marked.rgb()
    assert drawn.shape == photo.shape and (marked.width, marked.height) == (360, 240)
    assert len(marked.marks) >= 5
    covered = np.zeros(photo.shape[:2], dtype=bool)
    for mark in marked.marks:
        mask = marked.mask(mark["tag"])
        assert mark["rle"]["size"] == [240, 360] and isinstance(mark["rle"]["counts"], str)
        assert mark["area"] == int(mask.sum())
        r0, c0, r1, c1 = tight_box(mask)
        assert mark["bbox"] == [c0, r0, c1 - c0, r1 - r0]
        assert not (covered & mask).any(), f"tag {mark['tag']} overlaps an earlier tag"
        covered |= mask
        expected = np.rint(photo[mask] * (1 - alpha) + np.asarray(tag_colour(mark["id"], 0)) * alpha)
        assert np.abs(drawn[mask].astype(int) - expected.astype(int)).max() <= 1, mark["tag"]
    assert (drawn[~covered] == photo[~covered]).all()


def test_labels_are_drawn_inside_their_masks(photo):
    """Number labels sit on their own mask, where the drawing changed the photo."""
    marked = mark_image(png_bytes(photo), slic())
    drawn = marked.rgb()
    assert [m["tag"] for m in marked.marks] == [str(i) for i in range(1, len(marked.marks) + 1)]
    for mark in marked.marks:
        x, y = mark["position"]
        assert marked.mask(mark["tag"])[y, x]
        assert (drawn[y - 3 : y + 4, x - 3 : x + 4] != photo[y - 3 : y + 4, x - 3 : x + 4]).any()


def test_photos_are_resized_like_som_mark():
    """A JPEG upload is marked at the 640-px short side that `som mark` and training use."""
    marked = mark_image(data_path("waterview.jpg").read_bytes(), TagConfig(segmenter="slic"))
    assert (marked.width, marked.height) == (959, 640) and marked.segmenter["name"] == "slic"
    assert Image.open(io.BytesIO(marked.image)).format == "PNG"


def test_same_image_and_settings_are_marked_once(photo):
    """Chat clients resend the image every turn: the second call is the cached result."""
    data = png_bytes(photo)
    first = mark_image(data, slic())
    assert mark_image(data, slic()) is first
    assert mark_image(data, slic(label_mode="alpha")) is not first


def test_alpha_labels_and_their_mentions(photo):
    marked = mark_image(png_bytes(photo), slic(label_mode="alpha"))
    tags = [m["tag"] for m in marked.marks]
    assert tags[:3] == ["a", "b", "c"] and marked.label_mode == "alpha"
    assert marked.mentioned("A dog is at [c], and tag b is a cat.") == ["c", "b"]


def test_mentioned_numbers_stand_alone():
    tags = [str(i) for i in range(1, 13)]
    text = "Tag 3 and [4] are boats; 3.5 m long, the 12th one, 99 and 5."
    assert mentioned_tags(text, tags, "number") == ["3", "4", "5"]


def test_highlight_dims_all_but_the_chosen_tags(photo):
    marked = mark_image(png_bytes(photo), slic())
    highlighted = np.asarray(Image.open(io.BytesIO(marked.highlight(["2", "999"]))).convert("RGB"))
    inside = marked.mask("2")
    inside_only = ndimage.binary_erosion(inside, iterations=4)  # away from the outline
    assert inside_only.any()
    assert (highlighted[inside_only] == marked.rgb()[inside_only]).all()
    assert highlighted[~inside].mean() < 0.6 * marked.rgb()[~inside].mean()
    assert marked.highlight(["999"]) == marked.image, "unknown tags change nothing"


def test_tag_at_finds_the_mask_under_a_pixel(photo):
    """What a click on the demo's image resolves to: the tag owning that pixel, else None."""
    marked = mark_image(png_bytes(photo), slic(min_tag_area=5000))  # some regions get no tag
    owner = np.zeros(photo.shape[:2], dtype=object)
    for mark in marked.marks:
        owner[marked.mask(mark["tag"])] = mark["tag"]
    assert (owner == 0).any()
    for y in range(0, 240, 7):
        for x in range(0, 360, 7):
            assert marked.tag_at(x, y) == (owner[y, x] or None), (x, y)


def test_unknown_tag_names_the_known_ones(photo):
    marked = mark_image(png_bytes(photo), slic())
    with pytest.raises(KeyError, match="tags are 1, 2"):
        marked.mask("99")


def test_nothing_to_tag_returns_the_plain_image():
    """A flat image gives SLIC one region; with a min_tag_area above the image size nothing is
    tagged, and the caller gets the plain image and the reason, not an error."""
    flat = np.full((64, 64, 3), 128, dtype=np.uint8)
    marked = mark_image(png_bytes(flat), slic(min_tag_area=10_000))
    assert marked.marks == [] and "residual" in marked.skipped
    assert (marked.rgb() == flat).all()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (data_path("waterview.jpg").read_bytes()[:5000], "truncated"),
        (corrupt_png(), "corrupt"),
        (b"plain text, not a picture\n" * 10, "not a recognised image format"),
        (b"", "empty"),
    ],
    ids=["truncated-jpeg", "garbled-png", "text", "empty"],
)
def test_corrupt_upload_is_a_clear_error(data, reason):
    with pytest.raises(ImageLoadError) as info:
        mark_image(data, slic(), source="upload.jpg")
    assert reason in info.value.reason and info.value.source == "upload.jpg"


def test_pixel_bomb_is_refused_before_decoding():
    with pytest.raises(ImageLoadError, match=r"12000x9000 = 108000000 pixels exceeds the limit"):
        mark_image(pixel_bomb(12000, 9000), slic())


def test_extreme_aspect_ratio_is_refused():
    strip = np.zeros((10, 400, 3), dtype=np.uint8)
    with pytest.raises(ImageLoadError, match=r"extreme aspect ratio 400x10 \(40.0:1\)"):
        mark_image(png_bytes(strip), TagConfig(segmenter="slic"))


def test_pixel_limit_applies_after_resizing():
    """A small image asked to grow past the pixel limit is refused before it is allocated."""
    small = np.zeros((100, 120, 3), dtype=np.uint8)
    with pytest.raises(ImageLoadError, match=r"resized to 24000x20000 .* exceeds the limit"):
        mark_image(png_bytes(small), TagConfig(segmenter="slic", mark_options={"short_side": 20_000}))


def test_bad_settings_are_value_errors(photo):
    with pytest.raises(ValueError, match="unknown key 'colour'"):
        mark_image(png_bytes(photo), slic(colour="red"))
    with pytest.raises(ValueError, match="unknown segmenter"):
        mark_image(png_bytes(photo), TagConfig(segmenter="nope"))


def test_marked_image_is_a_plain_value():
    """The serve engineer's server sends marks as JSON: every field serialises."""
    import json

    marked = mark_image(png_bytes(np.asarray(Image.open(data_path("extreme_ironing.jpg")).convert("RGB"))), slic())
    assert isinstance(marked, MarkedImage)
    json.dumps(marked.marks)
