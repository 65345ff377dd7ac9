"""The segmenter protocol and a registry entry's shape.

The table of segmenters by name is `som.segment.registry`; it imports the segmenter modules,
and they import only this module, so the registry is never imported back (no cycle).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from som.segment.mask import Mask
from som.settings import Settings


class Segmenter(Protocol):
    """Turns an RGB image into object masks.

    `source` names the image (its file name or URI); only annotation-backed segmenters such as
    `coco` use it, to find the image's annotations.
    """

    name: str

    def generate(self, image: np.ndarray, *, source: str | None = None) -> list[Mask]: ...

    def describe(self) -> dict[str, Any]:
        """Name and parameters, recorded in every output's metadata."""
        ...


@dataclass(frozen=True)
class SegmenterSpec:
    """A registry entry: a params model (`som.settings.Settings`: typed, strict, CLI text read
    by field type) and the factory (usually the segmenter class) that builds the segmenter from it.

    uses_gpu: the segmenter holds a neural model that runs on the GPU when there is one, so
    `som mark` runs it in one process instead of one model copy per core.
    """

    name: str
    params_type: type[Settings]
    factory: Callable[[Any], Segmenter]
    summary: str
    uses_gpu: bool = False
