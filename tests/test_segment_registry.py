"""The segmenter registry: names, typed parameters from CLI strings (som.settings), helpful errors."""

from __future__ import annotations

import json

import pytest

from som.segment import available, build_segmenter, segmenter_params
from som.segment.coco import CocoParams, CocoSegmenter
from som.segment.sam import SamParams
from som.segment.superpixel import FelzenszwalbSegmenter, SlicParams, SlicSegmenter


def test_builtin_segmenters_are_listed_with_summaries():
    """`available()` lists every built-in segmenter (what `som mark --help` shows)."""
    specs = available()
    assert {"sam", "slic", "felzenszwalb", "coco"} <= set(specs)
    assert list(specs) == sorted(specs)
    for name in ("sam", "slic", "felzenszwalb", "coco"):
        assert specs[name].name == name
        assert specs[name].summary


def test_string_params_are_converted_to_field_types():
    """CLI strings become ints, floats and bools according to the params model."""
    segmenter = build_segmenter("slic", {"n_segments": "16", "compactness": "0.5", "sigma": "2", "min_area": "7"})
    assert isinstance(segmenter, SlicSegmenter)
    assert segmenter.params == SlicParams(n_segments=16, compactness=0.5, sigma=2.0, min_area=7)
    assert type(segmenter.params.n_segments) is int
    assert type(segmenter.params.sigma) is float


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        ("1", True),
        ("yes", True),
        ("on", True),
        ("false", False),
        ("0", False),
        ("no", False),
        ("Off", False),
    ],
)
def test_bool_strings(tmp_path, text, expected):
    """Booleans accept the usual spellings; "false" is False (bool("false") would be True)."""
    path = tmp_path / "instances.json"
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": []}))
    segmenter = build_segmenter("coco", {"annotations": str(path), "include_crowd": text})
    assert isinstance(segmenter, CocoSegmenter)
    assert segmenter.params.include_crowd is expected


def test_literal_choices_and_optional_none():
    """Literal fields accept their choices; "none"/"null" becomes None for Optional fields only."""
    params = segmenter_params(
        "sam", {"model_type": "vit_b", "autocast": "bf16", "checkpoint": "none", "cache_dir": "null"}
    )
    assert isinstance(params, SamParams)
    assert params.model_type == "vit_b"
    assert params.autocast == "bf16"
    assert params.checkpoint is None and params.cache_dir is None
    # "none" is itself one of autocast's Literal choices, so it stays a string there.
    assert segmenter_params("sam", {"autocast": "none"}).autocast == "none"
    # A real path stays a string.
    assert segmenter_params("sam", {"checkpoint": "/w/sam.pth"}).checkpoint == "/w/sam.pth"


def test_non_string_values_pass_through():
    """Values that are already typed (from Python callers) are used as given: an int stays an
    int in a float field, as recorded datasets hold it (their fingerprints hash it so)."""
    params = segmenter_params("slic", {"n_segments": 12, "compactness": 3.5, "sigma": 2})
    assert params == SlicParams(n_segments=12, compactness=3.5, sigma=2)
    assert type(params.sigma) is int


def test_defaults_when_no_params():
    """No params builds the segmenter with its dataclass defaults."""
    segmenter = build_segmenter("felzenszwalb")
    assert isinstance(segmenter, FelzenszwalbSegmenter)
    assert segmenter.describe()["params"]["scale"] == 400.0


def test_unknown_segmenter_lists_the_choices():
    """A typo in --segmenter names the registered choices."""
    with pytest.raises(ValueError) as info:
        build_segmenter("slick")
    message = str(info.value)
    assert "'slick'" in message
    for name in ("sam", "slic", "felzenszwalb", "coco"):
        assert name in message


def test_unknown_parameter_lists_known_ones():
    """A misspelt parameter is rejected, naming it and the closest known parameter (or all of
    them when none is close)."""
    with pytest.raises(ValueError) as info:
        build_segmenter("slic", {"n_segment": "16"})
    assert str(info.value) == "segmenter slic: unknown key 'n_segment' (did you mean n_segments?)"
    with pytest.raises(ValueError) as info:
        build_segmenter("slic", {"colour": "red"})
    assert "unknown key 'colour' (known: n_segments, compactness, sigma, min_area)" in str(info.value)


@pytest.mark.parametrize(
    ("name", "params", "bad"),
    [
        ("slic", {"n_segments": "many"}, "n_segments: Input should be a valid integer"),
        ("slic", {"n_segments": "0.5"}, "n_segments: Input should be a valid integer"),  # not a float
        ("slic", {"compactness": "high"}, "compactness: Input should be a valid number"),
        ("coco", {"include_crowd": "maybe"}, "include_crowd: Input should be a valid boolean"),
        ("sam", {"model_type": "vit_x"}, "model_type: Input should be 'vit_b', 'vit_l' or 'vit_h'"),
        ("sam", {"autocast": "fp8"}, "autocast: Input should be 'none', 'bf16' or 'fp16'"),
        ("sam", {"points_per_side": "none"}, "points_per_side: Input should be a valid integer"),  # not Optional
    ],
)
def test_bad_values_are_rejected_before_building(name, params, bad):
    """An unconvertible value raises ValueError naming the segmenter, the parameter and what it
    should be (before any model is loaded or file read)."""
    with pytest.raises(ValueError) as info:
        build_segmenter(name, params)
    assert str(info.value) == f"segmenter {name}: {bad}"


def test_coco_without_annotations_is_a_clear_error():
    """The coco segmenter needs an annotations file and says so."""
    with pytest.raises(ValueError, match="annotations="):
        build_segmenter("coco")
    assert CocoParams().annotations == ""
