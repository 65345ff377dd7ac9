"""Set-of-Mark: ownership of overlapping masks, tag placement, drawing and metadata."""

from som.mark.annotate import SomOutput, annotate, encode_image
from som.mark.marker import MarkResult, mark_image
from som.mark.options import DRAW_MODES, MarkOptions

__all__ = ["DRAW_MODES", "MarkOptions", "MarkResult", "SomOutput", "annotate", "encode_image", "mark_image"]
