"""Mask generators behind one protocol, chosen by name: sam, hf-sam, slic, felzenszwalb, coco."""

from som.segment.base import Segmenter, SegmenterSpec, parse_params
from som.segment.mask import Mask
from som.segment.registry import SEGMENTERS, available, build_segmenter, resident_segmenter

__all__ = ["SEGMENTERS", "Mask", "Segmenter", "SegmenterSpec", "available", "build_segmenter", "parse_params",
           "resident_segmenter"]
