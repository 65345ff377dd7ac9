"""Mask generators behind one protocol, chosen by name: sam, hf-sam, slic, felzenszwalb, coco."""

from som.segment.base import Segmenter, SegmenterSpec
from som.segment.mask import Mask
from som.segment.registry import SEGMENTERS, available, build_segmenter, resident_segmenter, segmenter_params

__all__ = [
    "SEGMENTERS",
    "Mask",
    "Segmenter",
    "SegmenterSpec",
    "available",
    "build_segmenter",
    "resident_segmenter",
    "segmenter_params",
]
