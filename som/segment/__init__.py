"""Mask generators behind one protocol, chosen by name: sam, slic, felzenszwalb, coco."""

from som.segment.base import Segmenter, available, build_segmenter, parse_params
from som.segment.mask import Mask

__all__ = ["Mask", "Segmenter", "available", "build_segmenter", "parse_params"]
