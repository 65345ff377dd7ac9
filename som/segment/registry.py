"""Every segmenter by name: a plain name -> spec table, built once from the segmenter modules.

Why a table and not decorators: modules that register themselves must be imported for their
side effect, so the registry imported them and they imported it back (an import cycle). Here
the registry imports each module and names what it builds, as segment-anything's
`sam_model_registry` and somflow's own benchmark table (som.eval.registry) do. The segmenter
modules import torch, transformers and scikit-image only when a segmenter is built, so
importing this table stays cheap.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from som.segment.base import Segmenter, SegmenterSpec
from som.segment.coco import CocoParams, CocoSegmenter
from som.segment.hf_sam import HfSamParams, HfSamSegmenter
from som.segment.sam import SamParams, SamSegmenter
from som.segment.superpixel import FelzenszwalbParams, FelzenszwalbSegmenter, SlicParams, SlicSegmenter
from som.settings import Settings, SettingsError, validate

SEGMENTERS: dict[str, SegmenterSpec] = {
    spec.name: spec
    for spec in (
        SegmenterSpec(
            "sam",
            SamParams,
            SamSegmenter,
            "Segment Anything automatic masks (checkpoint downloaded once, GPU if present)",
            uses_gpu=True,
        ),
        SegmenterSpec(
            "hf-sam",
            HfSamParams,
            HfSamSegmenter,
            "Segment Anything via transformers SamModel (hub id or folder; GPU if present)",
            uses_gpu=True,
        ),
        SegmenterSpec(
            "coco", CocoParams, CocoSegmenter, "masks and categories from a COCO instances JSON (annotations=PATH)"
        ),
        SegmenterSpec("slic", SlicParams, SlicSegmenter, "SLIC superpixels (scikit-image, CPU, no weights)"),
        SegmenterSpec(
            "felzenszwalb",
            FelzenszwalbParams,
            FelzenszwalbSegmenter,
            "Felzenszwalb graph segmentation (scikit-image, CPU)",
        ),
    )
}
"""The built-in segmenters; a test may add an entry (tests/helpers/dying_segmenter.py)."""


def available() -> dict[str, SegmenterSpec]:
    """Every segmenter, sorted by name (what `som segmenters` lists)."""
    return dict(sorted(SEGMENTERS.items()))


def segmenter_params(name: str, params: Mapping[str, Any] | None = None) -> Settings:
    """`name`'s typed parameters from `params` (CLI text such as "32" or "true" is read by the
    field's type); an unknown segmenter, key or value raises an error that names it."""
    if name not in SEGMENTERS:
        raise ValueError(f"unknown segmenter {name!r}; choose one of: {', '.join(available())}")
    try:
        return validate(SEGMENTERS[name].params_type, params or {})
    except SettingsError as exc:
        raise SettingsError(f"segmenter {name}: {exc}") from None


def build_segmenter(name: str, params: Mapping[str, Any] | None = None) -> Segmenter:
    """Build a segmenter by name from its parameters (see `segmenter_params`)."""
    typed = segmenter_params(name, params)
    return SEGMENTERS[name].factory(typed)


def resident_segmenter(name: str, params: Mapping[str, Any] | None = None) -> Segmenter:
    """This process's segmenter for (name, params), built on first use and then reused.

    Workers that mark many shards load a model once, not once per shard.
    """
    return _resident(name, json.dumps(dict(params or {}), sort_keys=True))


@lru_cache(maxsize=4)
def _resident(name: str, params_json: str) -> Segmenter:
    return build_segmenter(name, json.loads(params_json))
