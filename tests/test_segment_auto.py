"""`--segmenter auto`: SAM when its checkpoint is cached, otherwise SLIC with a loud warning."""

from __future__ import annotations

import logging

import pytest

from som.segment import sam as sam_module
from som.segment.auto import choose_segmenter


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty somflow cache; downloads fail the test (auto must never download)."""
    monkeypatch.setenv("SOMFLOW_CACHE", str(tmp_path))

    def no_download(url, destination):
        raise AssertionError("choose_segmenter must not download")

    monkeypatch.setattr(sam_module, "_download", no_download)
    return tmp_path


def put_checkpoint(cache, model_type: str) -> None:
    url = sam_module.CHECKPOINTS[model_type][0]
    (cache / "sam").mkdir(exist_ok=True)
    (cache / "sam" / url.rsplit("/", 1)[1]).write_bytes(b"weights")


def test_no_checkpoint_falls_back_to_slic_loudly(cache, caplog):
    """Without a cached checkpoint, auto picks slic and warns, naming the missing file."""
    with caplog.at_level(logging.WARNING, logger="som.segment.auto"):
        name, params = choose_segmenter({"points_per_side": "16"})
    assert (name, params) == ("slic", {})  # SAM's knobs do not apply to slic
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "slic" in message and "--segmenter sam" in message
    assert str(cache / "sam" / "sam_vit_h_4b8939.pth") in message
    assert list(cache.iterdir()) == []


def test_cached_checkpoint_picks_sam_quietly(cache, caplog):
    """With the default (vit_h) checkpoint cached, auto picks sam and keeps its params."""
    put_checkpoint(cache, "vit_h")
    with caplog.at_level(logging.WARNING, logger="som.segment.auto"):
        assert choose_segmenter({"points_per_side": "16"}) == ("sam", {"points_per_side": "16"})
    assert not caplog.records


def test_checkpoint_of_the_requested_model_type(cache):
    """model_type decides which checkpoint must be present."""
    put_checkpoint(cache, "vit_b")
    assert choose_segmenter({"model_type": "vit_b"})[0] == "sam"
    assert choose_segmenter({})[0] == "slic"  # vit_h is the default and is not cached
    assert choose_segmenter({"model_type": "vit_l"})[0] == "slic"


def test_explicit_checkpoint_picks_sam(cache):
    """checkpoint=PATH means the user has weights: sam, whatever the cache holds."""
    params = {"checkpoint": "/models/sam_vit_h_4b8939.pth"}
    assert choose_segmenter(params) == ("sam", params)
