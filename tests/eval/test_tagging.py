"""The "w/ tags" variant: real Set-of-Mark marking (CPU SLIC), its cache, and items that carry it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from som.eval.items import EvalItem
from som.eval.tagging import ItemImageError, TagConfig, read_image_bytes, tag_image, with_tags
from tests.helpers.data import data_path

SLIC = {"segmenter": "slic", "params": {"n_segments": 12}}


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"), dtype=np.int16)


@pytest.fixture
def photo() -> bytes:
    return data_path("waterview.jpg").read_bytes()


def test_tag_image_draws_marks_and_caches_them(photo: bytes, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    marked = tag_image(photo, cache_url=cache, short_side=160, **SLIC)
    assert marked[:3] == b"\xff\xd8\xff" and marked != photo
    plain = _pixels(photo)
    drawn = _pixels(marked)
    assert min(drawn.shape[:2]) == 160
    resized = np.asarray(
        Image.open(io.BytesIO(photo)).convert("RGB").resize(drawn.shape[1::-1], Image.BICUBIC), dtype=np.int16
    )
    # The tags (black boxes, white digits) change some pixels a lot; JPEG noise alone does not.
    assert (np.abs(drawn - resized).max(axis=2) > 120).mean() > 0.002
    assert plain.shape != drawn.shape
    (entry,) = list(Path(cache).rglob("*.jpg"))
    assert entry.read_bytes() == marked
    # A second call reads the cache: prove it by planting different bytes there.
    entry.write_bytes(b"\xff\xd8\xff-cached")
    assert tag_image(photo, cache_url=cache, short_side=160, **SLIC) == b"\xff\xd8\xff-cached"
    # Other settings are another key: marked afresh.
    other = tag_image(photo, cache_url=cache, short_side=160, segmenter="slic", params={"n_segments": 6})
    assert other not in (marked, b"\xff\xd8\xff-cached")
    assert len(list(Path(cache).rglob("*.jpg"))) == 2


def test_unknown_mark_option_is_named(photo: bytes) -> None:
    with pytest.raises(ValueError, match="mark_options: unknown key 'colour'"):
        tag_image(photo, colour="red", **SLIC)


def test_with_tags_marks_when_the_runner_reads(photo: bytes, tmp_path: Path) -> None:
    image = tmp_path / "photo.jpg"
    image.write_bytes(photo)
    items = [
        EvalItem("q1", "Is there water?", str(image), {"label": "yes"}),
        EvalItem("q2", "Text only", None, {}),
        EvalItem("l1", "List the tags", str(image), {"premarked": True}),
    ]
    config = TagConfig(
        segmenter="slic", params={"n_segments": 12}, mark_options={"short_side": 160}, cache_url=str(tmp_path / "cache")
    )
    tagged = with_tags(items, config)
    assert [t.id for t in tagged] == ["q1", "q2", "l1"] and tagged[0].prompt == items[0].prompt
    assert tagged[0].meta["label"] == "yes" and tagged[0].meta["tagging"]["segmenter"] == "slic"
    assert tagged[1] is items[1] and tagged[2] is items[2]
    assert read_image_bytes(items[0]) == photo
    assert read_image_bytes(tagged[0]) == tag_image(
        photo, segmenter="slic", params={"n_segments": 12}, cache_url=str(tmp_path / "cache"), short_side=160
    )
    assert read_image_bytes(tagged[2]) == photo  # already a Set-of-Mark image: untouched
    assert read_image_bytes(tagged[1]) is None
    # Items stay JSON-able, so they can travel to Slurm tasks.
    assert EvalItem.from_dict(tagged[0].to_dict()) == tagged[0]


def test_unreadable_image_names_the_item(tmp_path: Path) -> None:
    with pytest.raises(ItemImageError, match=r"item q7: cannot read image .*missing.jpg"):
        read_image_bytes(EvalItem("q7", "?", str(tmp_path / "missing.jpg"), {}))
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    bad = with_tags([EvalItem("q8", "?", str(tmp_path / "bad.jpg"), {})], TagConfig(**SLIC))[0]
    with pytest.raises(ItemImageError, match="item q8: cannot mark image"):
        read_image_bytes(bad)
