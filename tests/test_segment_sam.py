"""sam: the real SamAutomaticMaskGenerator path on a tiny random SAM, and checkpoint handling."""

from __future__ import annotations

import hashlib
import json
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from som.images import decode_image
from som.mark import MarkOptions, annotate
from som.segment import Mask
from som.segment import sam as sam_module
from som.segment.sam import SamParams, SamSegmenter, official_checkpoint
from tests.helpers.data import data_path, small_photo
from tests.helpers.tiny_sam import build_tiny_sam

FAST = dict(points_per_side=8, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=0.95)


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return small_photo("extreme_ironing.jpg", short_side=96)  # 96 x 144


def tiny_segmenter(**overrides) -> SamSegmenter:
    params = SamParams(**{**FAST, "device": "cpu", **overrides})
    return SamSegmenter(params, model=build_tiny_sam(seed=0))


def check_masks(masks: list[Mask], height: int, width: int) -> None:
    assert masks, "the automatic mask generator kept no mask"
    for mask in masks:
        assert isinstance(mask, Mask)
        assert (mask.height, mask.width) == (height, width)
        assert mask.crop.dtype == bool and mask.area > 0
        assert type(mask.score) is float and np.isfinite(mask.score)
        assert mask.category is None


def test_tiny_sam_runs_the_automatic_mask_generator(photo):
    """generate() runs segment-anything's generator end to end and returns image-sized Masks
    with float scores (SAM's predicted IoU)."""
    segmenter = tiny_segmenter()
    masks = segmenter.generate(photo)
    check_masks(masks, *photo.shape[:2])
    # The generator really ran with our knobs: a grid of 8x8 points.
    assert segmenter.generator.point_grids[0].shape == (64, 2)
    # Same model and image, same masks: results are reproducible.
    again = tiny_segmenter().generate(photo)
    assert [m.area for m in again] == [m.area for m in masks]


def test_thresholds_are_passed_to_the_generator(photo):
    """pred_iou_thresh filters masks: with an impossible threshold nothing survives."""
    assert tiny_segmenter(pred_iou_thresh=1e9).generate(photo) == []


def test_bf16_autocast_on_cpu(photo):
    """autocast=bf16 works (regression: bfloat16 IoU predictions crashed segment-anything's
    MaskData.to_numpy with "Got unsupported ScalarType BFloat16")."""
    masks = tiny_segmenter(autocast="bf16").generate(photo)
    check_masks(masks, *photo.shape[:2])


def test_annotate_with_tiny_sam(photo):
    """The full Set-of-Mark step with SAM gives JSON-able metadata that records the segmenter."""
    from pycocotools import mask as mask_utils

    data = data_path("extreme_ironing.jpg").read_bytes()
    loaded = decode_image(data, "file:///photos/extreme_ironing.jpg")
    segmenter = tiny_segmenter()
    output = annotate(loaded, segmenter, MarkOptions(short_side=96))
    metadata = json.loads(output.metadata_json())

    assert metadata["image"] == "file:///photos/extreme_ironing.jpg"
    assert metadata["sha256"] == hashlib.sha256(data).hexdigest()
    assert (metadata["width"], metadata["height"]) == (144, 96)
    assert metadata["scale"] == pytest.approx(96 / 380, abs=1e-6)
    assert metadata["segmenter"]["name"] == "sam"
    params = metadata["segmenter"]["params"]
    assert params["points_per_side"] == 8 and params["device"] == "cpu"
    assert "cache_dir" not in params
    assert metadata["marks"], metadata.get("skipped")
    assert output.image_bytes and output.image_bytes[:2] == b"\xff\xd8"  # a JPEG
    scores = [m.score for m in segmenter.generate(photo)]  # the same resized image
    for number, mark in enumerate(metadata["marks"], start=1):
        assert mark["id"] == number and mark["label"] == str(number)
        assert isinstance(mark["score"], float)
        assert min(abs(mark["score"] - score) for score in scores) < 1e-3  # metadata rounds
        assert mark["category"] is None
        rle = dict(mark["segmentation"], counts=mark["segmentation"]["counts"].encode())
        decoded = mask_utils.decode(rle)
        assert decoded.shape == (96, 144)
        assert int(decoded.sum()) == mark["area"] >= 110
        x, y = mark["position"]
        assert decoded[int(y), int(x)]


def test_describe_is_portable():
    """describe() drops the cache folder and keeps only a checkpoint's file name."""
    segmenter = tiny_segmenter(checkpoint="/very/private/path/sam_vit_b_01ec64.pth", cache_dir="/c")
    description = segmenter.describe()
    assert description["params"]["checkpoint"] == "sam_vit_b_01ec64.pth"
    assert "cache_dir" not in description["params"]
    assert description["params"]["model_type"] == "vit_h"
    assert json.loads(json.dumps(description)) == description


@pytest.mark.gpu
@pytest.mark.parametrize("autocast", ["none", "bf16", "fp16"])
def test_tiny_sam_on_cuda(photo, autocast):
    """On a GPU the generator runs on CUDA, with and without half-precision autocast."""
    segmenter = tiny_segmenter(device="cuda", autocast=autocast)
    assert next(segmenter.generator.predictor.model.parameters()).is_cuda
    check_masks(segmenter.generate(photo), *photo.shape[:2])


# --- checkpoints --------------------------------------------------------------------------------

VIT_B_URL, VIT_B_SHA = sam_module.CHECKPOINTS["vit_b"]
VIT_B_FILE = "sam_vit_b_01ec64.pth"


def no_download(url: str, destination: Path) -> None:
    raise AssertionError(f"unexpected download of {url}")


def test_cached_checkpoint_is_used_without_download(tmp_path, monkeypatch):
    """A checkpoint already in the cache is returned as is; nothing is fetched."""
    (tmp_path / VIT_B_FILE).write_bytes(b"weights")
    monkeypatch.setattr(sam_module, "_download", no_download)
    assert official_checkpoint("vit_b", tmp_path) == tmp_path / VIT_B_FILE


def test_default_cache_follows_somflow_cache(tmp_path, monkeypatch):
    """Without cache_dir, checkpoints live in $SOMFLOW_CACHE/sam (else XDG cache/somflow)."""
    monkeypatch.setenv("SOMFLOW_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cache" / "sam").mkdir(parents=True)
    (tmp_path / "cache" / "sam" / VIT_B_FILE).write_bytes(b"weights")
    monkeypatch.setattr(sam_module, "_download", no_download)
    assert official_checkpoint("vit_b") == tmp_path / "cache" / "sam" / VIT_B_FILE

    monkeypatch.delenv("SOMFLOW_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert sam_module.default_cache_dir() == tmp_path / "xdg" / "somflow"


def test_offline_error_says_where_to_put_the_file(tmp_path, monkeypatch):
    """Offline, the error names the URL, the exact path to place the file at, and the CPU
    alternative; no partial file is left behind."""

    def offline(url: str, destination: Path) -> None:
        destination.write_bytes(b"half a file")  # the connection drops mid-way
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(sam_module, "_download", offline)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError) as info:
        official_checkpoint("vit_b", cache)
    message = str(info.value)
    assert VIT_B_URL in message
    assert str(cache / VIT_B_FILE) in message
    assert "slic" in message and "checkpoint=" in message
    assert isinstance(info.value.__cause__, urllib.error.URLError)
    assert list(cache.iterdir()) == []


def test_unreachable_url_through_the_real_downloader(tmp_path, monkeypatch):
    """The real _download's failure (a URL that cannot be opened) becomes the same clear error."""
    missing = (tmp_path / "nowhere" / VIT_B_FILE).as_uri()
    monkeypatch.setitem(sam_module.CHECKPOINTS, "vit_b", (missing, VIT_B_SHA))
    with pytest.raises(RuntimeError, match="place it at"):
        official_checkpoint("vit_b", tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_wrong_hash_is_rejected_and_removed(tmp_path, monkeypatch):
    """A download whose sha256 differs (corrupt, captive portal page) is refused and deleted."""

    def junk(url: str, destination: Path) -> None:
        destination.write_bytes(b"<html>please log in</html>")

    monkeypatch.setattr(sam_module, "_download", junk)
    with pytest.raises(RuntimeError) as info:
        official_checkpoint("vit_b", tmp_path)
    assert VIT_B_SHA in str(info.value)
    assert hashlib.sha256(b"<html>please log in</html>").hexdigest() in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_verified_download_lands_in_the_cache(tmp_path, monkeypatch):
    """A download with the expected sha256 is moved into place (through the real downloader,
    from a file:// URL) and then reused."""
    payload = b"pretend these are SAM weights"
    source = tmp_path / "mirror" / VIT_B_FILE
    source.parent.mkdir()
    source.write_bytes(payload)
    monkeypatch.setitem(sam_module.CHECKPOINTS, "vit_b", (source.as_uri(), hashlib.sha256(payload).hexdigest()))
    cache = tmp_path / "cache"
    target = official_checkpoint("vit_b", cache)
    assert target == cache / VIT_B_FILE
    assert target.read_bytes() == payload
    assert sorted(p.name for p in cache.iterdir()) == [VIT_B_FILE]  # no .part left
    source.unlink()
    assert official_checkpoint("vit_b", cache) == target


def test_building_sam_offline_fails_clearly(tmp_path, monkeypatch):
    """`--segmenter sam` with no cached checkpoint and no network fails with the offline
    message (through the registry, as the CLI builds it)."""
    from som.segment import build_segmenter

    def offline(url: str, destination: Path) -> None:
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(sam_module, "_download", offline)
    with pytest.raises(RuntimeError, match="Offline"):
        build_segmenter("sam", {"model_type": "vit_b", "cache_dir": str(tmp_path), "device": "cpu"})
